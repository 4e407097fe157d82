"""Validating a composed config before anything heavy is built, so that a bad value costs a
second, names the key, and leaves nothing half-written on disk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from segtrain.compat import config_node
from segtrain.errors import SegtrainError

#: ``loss.class_weights=median_frequency``: SegNet's class balancing, computed from the train split.
MEDIAN_FREQUENCY = "median_frequency"


@dataclass(frozen=True)
class Rule:
    key: str
    check: Callable[[Any], bool]
    expected: str
    required: bool = True


def _number(value) -> bool:
    """A finite int or float: ``inf`` and ``nan`` pass no rule."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def _epochs_or_steps(value) -> bool:
    return _int(value) and (value >= 1 or value == -1)


def _devices(value) -> bool:
    """Lightning's forms: a count >= 1, -1 (all), "auto", or a list of device indices."""
    if _int(value):
        return value >= 1 or value == -1
    if _list(value):
        return len(value) > 0 and all(_int(index) and index >= 0 for index in value)
    return value == "auto" or (isinstance(value, str) and re.fullmatch(r"\d+(,\s*\d+)*,?", value) is not None)


def _size(minimum: int) -> Callable[[Any], bool]:
    return lambda value: (
        value is None
        or (_list(value) and len(value) in (2, 3) and all(_int(n) and n >= minimum for n in value))
    )


def _fraction_or_count(value) -> bool:
    """Lightning's ``limit_*_batches`` / ``val_check_interval``: a fraction in (0, 1] or a count >= 1."""
    if value is None:
        return True
    if isinstance(value, float):
        return 0 < value <= 1
    return _int(value) and value >= 0


#: Sliding windows below this hold too little context for any network (and half of one is the default stride).
MIN_WINDOW = 8


#: Test-time scales outside this range shrink images to nothing or blow up memory.
SCALE_RANGE = (0.1, 8.0)


RULES = (
    Rule("seed", _int, "an integer"),
    Rule(
        "task.monitor",
        lambda v: isinstance(v, str) and v.startswith("val/") and len(v) > len("val/"),
        "val/NAME, a score the task logs at validation (val/mIoU, val/mDice, val/mask_AP, ...)",
        required=False,
    ),
    Rule("data.classes", lambda v: _list(v) and len(v) > 0, "a non-empty list of class names"),
    Rule("data.num_classes", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    Rule("data.in_channels", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    Rule("data.ignore_index", lambda v: _int(v) and 0 <= v <= 255, "an integer in [0, 255]"),
    Rule("data.batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    Rule(
        "data.val_batch_size",
        lambda v: v is None or (_int(v) and v >= 1),
        "null or an integer >= 1",
        required=False,
    ),
    Rule("data.num_workers", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    Rule("data.crop_size", _size(1), "null or [H, W] (or [D, H, W]) of integers >= 1", required=False),
    Rule("data.mean", lambda v: _list(v) and all(_number(x) for x in v), "a list of numbers"),
    Rule("data.std", lambda v: _list(v) and all(_number(x) and x > 0 for x in v), "a list of numbers > 0"),
    Rule(
        "loss.class_weights",
        lambda v: (
            v in (None, MEDIAN_FREQUENCY)
            or (_list(v) and all(_number(x) and x >= 0 for x in v) and any(x > 0 for x in v))
        ),
        f"null, {MEDIAN_FREQUENCY} (computed from the train split) or a list of finite numbers >= 0, one per "
        "class, not all 0",
        required=False,
    ),
    Rule("optimizer.lr", lambda v: _number(v) and v > 0, "a finite number > 0"),
    Rule("optimizer.weight_decay", lambda v: _number(v) and v >= 0, "a finite number >= 0", required=False),
    Rule("optimizer.momentum", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)", required=False),
    Rule(
        "trainer.max_epochs",
        lambda v: v is None or _epochs_or_steps(v),
        "an integer >= 1 (or -1: no limit)",
        required=False,
    ),
    Rule("trainer.max_steps", _epochs_or_steps, "an integer >= 1 (or -1: no limit)", required=False),
    Rule(
        "trainer.devices",
        _devices,
        "an integer >= 1, -1 (every device), auto, or a list of device indices",
        required=False,
    ),
    Rule(
        "trainer.gradient_clip_val",
        lambda v: v is None or (_number(v) and v >= 0),
        "null or a number >= 0",
        required=False,
    ),
    Rule("trainer.accumulate_grad_batches", lambda v: _int(v) and v >= 1, "an integer >= 1", required=False),
    Rule("trainer.num_nodes", lambda v: _int(v) and v >= 1, "an integer >= 1", required=False),
    Rule("trainer.sync_batchnorm", lambda v: isinstance(v, bool), "true or false", required=False),
    Rule(
        "trainer.limit_train_batches",
        _fraction_or_count,
        "null, a fraction in (0, 1] or a count >= 0",
        required=False,
    ),
    Rule(
        "trainer.limit_val_batches",
        _fraction_or_count,
        "null, a fraction in (0, 1] or a count >= 0",
        required=False,
    ),
    Rule(
        "trainer.val_check_interval",
        _fraction_or_count,
        "null, a fraction in (0, 1] or a count >= 1",
        required=False,
    ),
    Rule("auto_scale_lr.base_batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1", required=False),
    # The inference keys are the task's (conf/inference/<task>.yaml): checked where the task has them.
    Rule("inference.mode", lambda v: v in ("whole", "slide"), "'whole' or 'slide'", required=False),
    Rule(
        "inference.crop_size",
        _size(MIN_WINDOW),
        f"null or [H, W] (or [D, H, W]) of integers >= {MIN_WINDOW}",
        required=False,
    ),
    Rule(
        "inference.stride",
        _size(1),
        "null (half the crop) or [H, W] (or [D, H, W]) of integers >= 1",
        required=False,
    ),
    Rule(
        "inference.scales",
        lambda v: (
            _list(v) and len(v) > 0 and all(_number(s) and SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in v)
        ),
        f"a non-empty list of numbers in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}]",
        required=False,
    ),
    Rule("inference.flip", lambda v: isinstance(v, bool), "true or false", required=False),
    Rule(
        "trainer.threads",
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "null (chosen from the cores) or an integer >= 1",
        required=False,
    ),
    Rule(
        "inference.score_resolution",
        lambda v: v in ("original", "transformed"),
        "'original' (each image's own size) or 'transformed' (the size data.val_transforms give)",
        required=False,
    ),
    Rule("inference.crf", lambda v: isinstance(v, bool), "true or false", required=False),
    Rule("inference.gaussian", lambda v: isinstance(v, bool), "true or false", required=False),
    # Scores and mask probabilities are in [0, 1] and kept when above the threshold: 1 keeps nothing, and
    # a mask cut at 0 or below is its whole box.
    Rule(
        "inference.score_threshold",
        lambda v: _number(v) and 0 <= v < 1,
        "a score in [0, 1): detections scoring above it are drawn",
        required=False,
    ),
    Rule(
        "inference.mask_threshold",
        lambda v: _number(v) and 0 < v < 1,
        "a probability in (0, 1): mask pixels above it are the object (0.5 is the papers')",
        required=False,
    ),
    Rule("inference.crf_params.iterations", lambda v: _int(v) and v >= 1, "an integer >= 1", required=False),
    *(
        Rule(f"inference.crf_params.{key}", lambda v: _number(v) and v >= 0, "a number >= 0", required=False)
        for key in ("w1", "w2")
    ),
    *(
        Rule(f"inference.crf_params.{key}", lambda v: _number(v) and v > 0, "a number > 0", required=False)
        for key in ("theta_alpha", "theta_beta", "theta_gamma")
    ),
)


#: Keys that hold a probability, a fraction or an IoU, wherever they sit under these nodes (a model's NMS
#: and IoU thresholds, dropout, the positive fraction of sampled boxes, the warm-up's share, the
#: adversarial tau): each must be a number in [0, 1].
_UNIT_KEY = re.compile(r"(^|_)(thresh|threshold|dropout|fraction|tau)$|^warmup_ratio$")


_UNIT_NODES = ("model", "loss", "scheduler", "adversarial", "task")


_ABSENT = object()


def _value(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
    except Exception as err:  # interpolation to a missing key, MISSING value
        cause = err
        while cause is not None and not isinstance(cause, SegtrainError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # a resolver's own message (an unreadable COCO json) says it all
            raise SegtrainError(str(cause)) from None
        raise SegtrainError(f"config key {key} cannot be resolved: {str(err).splitlines()[0]}") from None


def validate(cfg: DictConfig, data_root: bool = True) -> None:
    """Check types, ranges and cross-key consistency; raise one SegtrainError naming the key.
    ``data_root=False`` for commands that read no dataset (predict, export)."""
    if data_root:
        _check_data_root(cfg)
    for rule in RULES:
        value = _value(cfg, rule.key)
        if value is _ABSENT:
            if rule.required:
                raise SegtrainError(f"config key {rule.key} is missing; it must be {rule.expected}")
            continue
        if not rule.check(value):
            raise SegtrainError(f"{rule.key}={value!r} is invalid: it must be {rule.expected}")
    for node in _UNIT_NODES:
        _check_unit_keys(cfg.get(node), node)
    _check_consistency(cfg)


def _check_unit_keys(node, path: str) -> None:
    if not isinstance(node, DictConfig):
        return
    for key in node:
        if isinstance(config_node(node, key), DictConfig):
            _check_unit_keys(node[key], f"{path}.{key}")
            continue
        value = _value(node, str(key)) if _UNIT_KEY.search(str(key)) else None
        if value is not None and not (_number(value) and 0 <= value <= 1):
            raise SegtrainError(
                f"{path}.{key}={value!r} is invalid: it must be a number in [0, 1] (a probability, a "
                "fraction or an IoU)"
            )


def _check_data_root(cfg: DictConfig) -> None:
    data = cfg.data
    if OmegaConf.is_missing(data, "root"):
        raise SegtrainError(
            f"data.root is not set: data={data.get('name', '?')} reads a dataset from disk. "
            f"Pass data.root=/path/to/it on the command line. Expected layout: {_dataset_layout(data)}"
        )
    root = data.get("root")
    if root is not None and not Path(str(root)).is_dir():
        raise SegtrainError(
            f"data.root={root} does not exist or is not a directory. Expected layout: {_dataset_layout(data)}"
        )


def _dataset_layout(data: DictConfig) -> str:
    try:
        return getattr(get_class(data.dataset._target_), "layout", "") or "see the dataset's docs"
    except Exception:
        return "see the dataset's docs"


def other_task(cfg: DictConfig) -> tuple[str, str, str] | None:
    """(key, target, task) of the model or data config whose class is for another task than ``cfg``'s
    (read from segtrain's source, without importing it), or None."""
    from segtrain.tasks import task_spec
    from segtrain.tasks.declared import config_task

    spec = task_spec(cfg)
    for key in ("model", "data"):
        target = OmegaConf.select(cfg, f"{key}._target_")
        found = config_task(target) if target else None
        if found is not None and found != spec.name and found not in spec.compatible_tasks:
            return key, target, found
    return None


def _check_task(cfg: DictConfig, spec) -> None:
    from segtrain.tasks import spec_of

    mismatch = other_task(cfg)
    if mismatch is not None:
        key, target, found = mismatch
        other = spec_of(found)
        raise SegtrainError(
            f"{key}._target_={target} is for task={found}, but this run's task is {spec.name}. Pass "
            f"task={found}{f' with {other.trains_on}' if other else ''}; task={spec.name} takes "
            f"{spec.trains_on}"
        )


def _check_consistency(cfg: DictConfig) -> None:
    from segtrain.tasks import task_spec

    spec = task_spec(cfg)
    # First of these, which all assume the task's models and data.
    _check_task(cfg, spec)
    classes = list(cfg.data.classes)
    instance = spec.counts_background
    counted = len(classes) + instance
    if cfg.data.num_classes != counted:
        background = " and the background torchvision's detectors count as class 0" if instance else ""
        raise SegtrainError(
            f"data.num_classes={cfg.data.num_classes} but data.classes lists {len(classes)} "
            f"classes{background}"
            f" ({counted}); remove data.num_classes (it follows data.classes) or fix the list"
        )
    if not instance and cfg.data.ignore_index < len(classes):
        raise SegtrainError(
            f"data.ignore_index={cfg.data.ignore_index} is the id of class "
            f"'{classes[cfg.data.ignore_index]}': that class would never be trained or scored. Use an id >= "
            f"{len(classes)} (255 is the convention), or map the value to ignore with data.label_map"
        )
    if len(cfg.data.palette) < counted:
        raise SegtrainError(f"data.palette has {len(cfg.data.palette)} colours for {counted} classes")
    model_classes = OmegaConf.select(cfg, "model.num_classes")
    if model_classes is not None and model_classes != counted:
        background = " (the background included)" if instance else ""
        raise SegtrainError(
            f"model.num_classes={model_classes} does not match the {counted} classes{background} of "
            f"data={cfg.data.get('name', '?')}; drop the override (it follows data.num_classes)"
        )
    weights = OmegaConf.select(cfg, "loss.class_weights")
    if _list(weights) and len(weights) != len(classes):
        raise SegtrainError(f"loss.class_weights has {len(weights)} weights for {len(classes)} classes")
    for key in ("mean", "std"):
        if len(cfg.data[key]) != cfg.data.in_channels:
            raise SegtrainError(
                f"data.{key} has {len(cfg.data[key])} values for data.in_channels={cfg.data.in_channels}"
            )
    spec.validate(cfg)


def check_accelerator(cfg: DictConfig) -> None:
    """The machine has what ``trainer.accelerator`` asks for (checked where the run starts, not where a
    sweep is submitted from)."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SegtrainError(
                f"trainer.accelerator={accelerator}, but no CUDA GPU is visible on this machine; "
                "use trainer=cpu (or trainer=ddp_cpu for several processes)"
            )
