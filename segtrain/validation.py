"""Validating a composed config before anything heavy is built, so that a bad value costs a
second, names the key, and leaves nothing half-written on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segtrain.compat import config_node
from segtrain.errors import SegtrainError
from segtrain.schema import KEYS, listlike, number

#: Keys that hold a probability, a fraction or an IoU, wherever they sit under these nodes (a model's NMS
#: and IoU thresholds, dropout, the positive fraction of sampled boxes, the warm-up's share, the
#: adversarial tau): each must be a number in [0, 1].
_UNIT_KEY = re.compile(r"(^|_)(thresh|threshold|dropout|fraction|tau)$|^warmup_ratio$")


_UNIT_NODES = ("model", "loss", "scheduler", "adversarial", "task")


_ABSENT = object()

#: The config ``validate`` last passed (see ``validated``).
_passed: tuple[str, bool] | None = None


def _fingerprint(cfg: DictConfig, data_root: bool) -> tuple[str, bool]:
    """The config as composed, without Hydra's own node (which only the CLI's first composition has)."""
    return OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])), data_root


def validated(cfg: DictConfig, data_root: bool = True) -> bool:
    """Whether ``validate`` has just passed this config: the CLI validates a run before Hydra starts it
    (and writes its directory), and the job it then starts in this process composes the same config."""
    return _passed == _fingerprint(cfg, data_root)


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
    from segtrain.tasks import task_spec

    global _passed
    if data_root:
        _check_data_root(cfg)
    for key in (*KEYS, *task_spec(cfg).keys):
        if key.check is None:
            continue
        value = _value(cfg, key.name)
        if value is _ABSENT:
            if key.required:
                raise SegtrainError(f"config key {key.name} is missing; it must be {key.expected}")
            continue
        if not key.check(value):
            raise SegtrainError(f"{key.name}={value!r} is invalid: it must be {key.expected}")
    for node in _UNIT_NODES:
        _check_unit_keys(cfg.get(node), node)
    _check_consistency(cfg)
    _passed = _fingerprint(cfg, data_root)


def _check_unit_keys(node, path: str) -> None:
    if not isinstance(node, DictConfig):
        return
    for key in node:
        if isinstance(config_node(node, key), DictConfig):
            _check_unit_keys(node[key], f"{path}.{key}")
            continue
        value = _value(node, str(key)) if _UNIT_KEY.search(str(key)) else None
        if value is not None and not (number(value) and 0 <= value <= 1):
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
    from segtrain.tasks.declared import class_attribute

    target = OmegaConf.select(data, "dataset._target_")
    return (class_attribute(str(target), "layout", "") if target else "") or "see the dataset's docs"


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
    if listlike(weights) and len(weights) != len(classes):
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
