"""Finding, composing and validating configs.

``validate`` checks the composed config before anything heavy is built, so a bad value costs a
second, names the key, and leaves nothing half-written on disk.
"""

from __future__ import annotations

import colorsys
import difflib
import functools
import json
import math
import os
import re
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.runtime.processes import process_runs, usable_cores

_PACKAGE_DIR = Path(__file__).resolve().parent


def distinct_palette(count: int) -> ListConfig:
    """``${palette:N}``: N colours for datasets without an official palette, deterministic and
    spread around the hue circle by the golden ratio so that neighbouring ids differ."""
    colors = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        value = 0.95 if index % 2 else 0.7
        rgb = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append([round(channel * 255) for channel in rgb])
    # A ListConfig, not a list: OmegaConf.resolve (--resolve) rejects plain lists from resolvers.
    return ListConfig(colors)


def sweep_group() -> str | None:
    """``${sweep_group:}``: ``<run_name>/<sweep directory>`` in a multirun job, null in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def slurm_gpus(accelerator: str, devices) -> int:
    """``${slurm_gpus:${trainer.accelerator},${trainer.devices}}``: GPUs to ask SLURM for per node."""
    return devices if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > 0 else 0


@functools.lru_cache(maxsize=1)
def run_stamp() -> str:
    """``${run_stamp:}``: the start time and a random suffix, fixed for the process, so that runs started
    in the same second get directories of their own (and the CLI's pre-run check sees Hydra's directory)."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def loader_workers(devices=1) -> int:
    """``${loader_workers:${trainer.devices}}``: DataLoader workers per process, sized from this machine's
    cores: every core but one for the training processes, shared between them, at most 16 each."""
    processes = devices if isinstance(devices, int) and devices > 0 else 1
    return max(1, min(16, (usable_cores() - 1) // processes))


@functools.lru_cache(maxsize=8)
def _coco_categories(path: str, modified: float) -> tuple[tuple[int, str], ...]:
    from segtrain.data.datasets.coco_instances import load_coco_json

    categories = load_coco_json(Path(path))["categories"]
    return tuple(sorted((int(category["id"]), str(category["name"])) for category in categories))


def coco_categories(root: str, annotation_file: str, split: str, field: str) -> ListConfig:
    """``${coco_categories:root,file,split,name|id}``: the categories of a COCO-format json, by id."""
    path = Path(str(root)) / str(annotation_file).format(split=split)
    if not path.is_file():
        raise SegtrainError(
            f"data.annotation_file: {path} does not exist; data=instances_folder reads the classes from it. "
            "Point data.root and data.annotation_file ({split} is filled in) at your COCO-format json"
        )
    categories = _coco_categories(str(path), path.stat().st_mtime)
    return ListConfig([category_id if field == "id" else name for category_id, name in categories])


OmegaConf.register_new_resolver("len", lambda items: len(items), replace=True)
OmegaConf.register_new_resolver("add", lambda *numbers: sum(numbers), replace=True)
OmegaConf.register_new_resolver("coco_categories", coco_categories, replace=True)
OmegaConf.register_new_resolver("loader_workers", loader_workers, replace=True)
OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
OmegaConf.register_new_resolver("palette", distinct_palette, replace=True)
OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)


def config_dir() -> Path:
    """``segtrain/conf`` inside an installed wheel, else the repository's top-level ``conf/``."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise SegtrainError(f"segtrain's configs were not found next to {_PACKAGE_DIR}; reinstall segtrain")


def config_groups() -> dict[str, list[str]]:
    """Every config group under conf/ and its options, e.g. ``{"model": ["deeplabv3", ...]}``."""
    root = config_dir()
    groups = {}
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group != "." and not path.stem.startswith("_"):
            groups.setdefault(group, []).append(path.stem)
    return groups


def compose(config_name: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose like the CLI does, with messages that list the valid choices on a bad override.

    ``with_hydra``: keep the ``hydra`` node (the run directory) and make ``${hydra:...}`` resolvable, as
    in the run Hydra is about to start."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
        except (ConfigCompositionException, MissingConfigException) as err:
            raise SegtrainError(_explain_override_error(err, config_name, overrides)) from None
        except OverrideParseException as err:
            raise SegtrainError(unparsable_override(overrides, err)) from None
    if with_hydra:
        HydraConfig.instance().set_config(cfg)
    return cfg


def check_run_name(cfg: DictConfig) -> None:
    """``run_name`` names a directory under ``paths.log_dir`` and must stay inside it."""
    name = str(cfg.run_name)
    if name in ("", ".") or ".." in Path(name).parts or Path(name).is_absolute():
        raise SegtrainError(
            f"run_name={name!r} is invalid: it must be a relative name inside paths.log_dir, without '..'"
        )


def requeued() -> bool:
    """Whether SLURM restarted this job (``scontrol requeue``, preemption, Lightning's auto-requeue)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


#: Created exclusively in a run directory before anything is written there: the directory is segtrain's,
#: and a second run started at the same moment finds it taken.
RUN_CLAIM = ".segtrain-run"


def check_fresh_directory(directory: Path, multirun: bool, may_continue: bool) -> None:
    """Refuses to start a run in a directory that holds an earlier run, whose config, checkpoints and
    metrics it would overwrite, unless this run continues that one (``may_continue``), and a directory of
    files segtrain did not write (a run writes its predictions, metrics and logs over same-named ones)."""
    if may_continue or not directory.is_dir():
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not multirun and not (directory / RUN_CLAIM).exists():
        foreign = next((path for path in sorted(directory.rglob("*")) if path.is_file()), None)
        if foreign is not None:
            raise SegtrainError(
                f"{key}={directory} already holds files segtrain did not write (e.g. {foreign}); a run "
                f"writes its outputs there and would overwrite same-named ones. Pass a new or empty {key}"
            )
    pattern = "*/.hydra/config.yaml" if multirun else ".hydra/config.yaml"
    earlier = next(directory.glob(pattern), None) or next(directory.glob("checkpoints/*.ckpt"), None)
    if earlier is not None:
        raise SegtrainError(
            f"{directory} already holds a run ({earlier.relative_to(directory)}); segtrain does not write "
            f"over it. Choose another {key}, or pass resume=true to continue that run"
        )


def unparsable_override(overrides: list[str], err: Exception) -> str:
    """Hydra's grammar error as the override it could not read and the quoting that passes it: braces,
    brackets, quotes and spaces in a value are grammar unless the value is quoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except Exception:  # the grammar's errors reach here as HydraException
            key, _, value = override.partition("=")
            quoted = value.replace('"', '\\"')
            return (
                f"cannot read the override {override!r} ({str(err).splitlines()[0]}). Quote its value for "
                f"Hydra, and the whole override for the shell: '{key}=\"{quoted}\"'"
            )
    return str(err).splitlines()[0]


def claim_directory(directory: Path, command: str, may_continue: bool) -> None:
    """Creates ``RUN_CLAIM`` in ``directory`` exclusively, before anything else is written there; a run
    that continues the directory's earlier run takes the claim over once that run has stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    claim = directory / RUN_CLAIM
    record = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname()})
    try:
        with open(claim, "x") as created:
            created.write(record)
        return
    except FileExistsError:
        pass
    try:
        holder = json.loads(claim.read_text())
    except (OSError, ValueError):
        holder = {}
    alive = holder.get("host") == socket.gethostname() and process_runs(holder.get("pid"))
    if may_continue and not alive:
        claim.write_text(record)
        return
    if not alive:
        raise SegtrainError(
            f"hydra.run.dir={directory} belongs to an earlier segtrain {holder.get('command', 'run')} that "
            "no longer runs; segtrain does not write over it. Choose another hydra.run.dir, or pass "
            "resume=true to continue that run"
        )
    raise SegtrainError(
        f"hydra.run.dir={directory} was claimed by another segtrain {holder.get('command', 'run')} (pid "
        f"{holder.get('pid', '?')} on {holder.get('host', '?')}) a moment ago; two runs in one directory "
        "would mix their metrics and checkpoints. Pass another hydra.run.dir"
    )


def wait_for_claim(directory: Path, timeout_s: float = 120.0) -> None:
    """Waits until rank 0 has claimed the run directory this rank shares with it."""
    deadline = time.monotonic() + timeout_s
    while not (directory / RUN_CLAIM).exists():
        if time.monotonic() > deadline:
            raise SegtrainError(
                f"this rank waited {timeout_s:.0f} s for rank 0 to claim hydra.run.dir={directory}; start "
                "rank 0 with the same hydra.run.dir"
            )
        time.sleep(0.1)


def _explain_override_error(err: Exception, config_name: str, overrides: list[str]) -> str:
    message = str(err).strip()
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    if missing:
        group, option = missing.groups()
        choices = config_groups().get(group, [])
        return (
            f"{group}={option} is not an option of the '{group}' group; choose one of: {', '.join(choices)}"
        )
    match = re.search(r"Could not override '([^']+)'", message) or re.search(
        r"Could not append to config. An item is already at '([^']+)'", message
    )
    if not match:
        return message
    key = match.group(1)
    others = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    try:
        base = hydra_compose(config_name, overrides=others)
    except Exception:
        return message
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    if not isinstance(parent, DictConfig):
        return f"unknown config key '{key}': '{parent_key}' is not a config section"
    valid = sorted(k for k in parent.keys() if isinstance(k, str))
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" Did you mean '{parent_key + '.' if parent_key else ''}{close[0]}'?" if close else ""
    return (
        f"unknown config key '{key}'.{hint} Valid keys under '{parent_key or '<root>'}': {', '.join(valid)}. "
        f"To add a new key on purpose, write +{key}=..."
    )


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
    Rule("inference.mode", lambda v: v in ("whole", "slide"), "'whole' or 'slide'"),
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
    ),
    Rule("inference.flip", lambda v: isinstance(v, bool), "true or false"),
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
        if isinstance(node._get_node(key), DictConfig):
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


def config_task(target: str) -> str | None:
    """The task a model or data module class is for (its ``task`` attribute; semantic by default), or None
    when the target cannot be imported (instantiation reports that)."""
    try:
        return getattr(get_class(target), "task", "semantic")
    except Exception:
        return None


def _check_task(cfg: DictConfig) -> None:
    from segtrain.tasks import TASKS

    task = OmegaConf.select(cfg, "task.name", default="semantic")
    if task not in TASKS:
        raise SegtrainError(f"task={task} is not a task segtrain trains; choose {', '.join(TASKS)}")
    for key in ("model", "data"):
        target = OmegaConf.select(cfg, f"{key}._target_")
        found = config_task(target) if target else None
        if found is not None and found != task:
            raise SegtrainError(
                f"{key}._target_={target} is for task={found}, but this run's task is {task}. Pass "
                f"task={found} with {TASKS[found][1]}; task={task} takes {TASKS[task][1]}"
            )


def _check_adversarial(cfg: DictConfig) -> None:
    """Adversarial training steps its two optimizers itself (Lightning's manual optimization), so the
    Trainer's own clipping and accumulation cannot apply."""
    if not cfg.get("adversarial"):
        return
    task = OmegaConf.select(cfg, "task.name", default="semantic")
    if task != "semantic":
        raise SegtrainError(
            f"adversarial training is for semantic segmentation; remove adversarial for task={task}"
        )
    if OmegaConf.select(cfg, "trainer.gradient_clip_val"):
        raise SegtrainError(
            "trainer.gradient_clip_val is not applied with adversarial training (both networks step in the "
            "task's own training step); set trainer.gradient_clip_val=null"
        )
    if str(OmegaConf.select(cfg, "trainer.precision")).startswith("16"):
        raise SegtrainError(
            f"trainer.precision={OmegaConf.select(cfg, 'trainer.precision')} scales the loss, which the "
            "adversarial discriminator's optimizer does not undo; use trainer.precision=bf16-mixed or 32-true"
        )
    if (OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1) > 1:
        raise SegtrainError(
            "trainer.accumulate_grad_batches>1 is not applied with adversarial training (both networks step "
            "every batch); set it to 1 and raise data.batch_size instead"
        )


def _check_consistency(cfg: DictConfig) -> None:
    _check_adversarial(cfg)
    classes = list(cfg.data.classes)
    # Instance labels are 1..K: torchvision's detectors count the background as class 0.
    instance = OmegaConf.select(cfg, "task.name") == "instance"
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
    if cfg.inference.get("crf") and cfg.data.in_channels != 3:
        raise SegtrainError(f"inference.crf=true needs RGB images; data.in_channels={cfg.data.in_channels}")
    if cfg.inference.mode == "slide" and not cfg.inference.get("crop_size"):
        raise SegtrainError(
            "inference.mode=slide needs inference.crop_size=[H,W] (and optionally inference.stride)"
        )
    crop, stride = cfg.inference.get("crop_size"), cfg.inference.get("stride")
    if crop and stride and (len(stride) != len(crop) or any(s > c for s, c in zip(stride, crop))):
        raise SegtrainError(
            f"inference.stride={list(stride)} must have one step per dimension of "
            f"inference.crop_size={list(crop)}, "
            "each no larger than the crop (larger steps would skip pixels)"
        )
    # Last: it imports the model's and the data module's classes (torch, Lightning), which a message about
    # any other key should not wait for.
    _check_task(cfg)


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


def check_writable(directory: str | os.PathLike, key: str = "paths.log_dir") -> None:
    """Fail before a run starts when its output directory cannot be created or written."""
    path = Path(directory).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SegtrainError(
            f"output directory {path} is not writable ({existing} is not a directory); "
            f"set {key} to a writable directory"
        )
    try:  # os.access says yes to root everywhere, /proc included: try for real, leaving nothing behind
        os.rmdir(tempfile.mkdtemp(prefix=".segtrain-write-check-", dir=existing))
    except OSError as err:
        raise SegtrainError(
            f"output directory {path} is not writable ({existing}: {err.strerror}); set {key} to a writable "
            "directory"
        ) from None
