"""One description of each key segtrain owns: what it must be (the check and the words an error uses) and
its ``--help`` line. ``validation`` checks every composed config against it and ``help`` prints from it;
a task's own keys (its inference slice) are its spec's ``keys``, described the same way.

Imports nothing heavy: ``--help`` and every config error read it before torch is loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import ListConfig

#: ``loss.class_weights=median_frequency``: SegNet's class balancing, computed from the train split.
MEDIAN_FREQUENCY = "median_frequency"

#: Sliding windows below this hold too little context for any network (and half of one is the default stride).
MIN_WINDOW = 8

#: Test-time scales outside this range shrink images to nothing or blow up memory.
SCALE_RANGE = (0.1, 8.0)


@dataclass(frozen=True)
class Key:
    """``check`` None: a key only described (its command reads and checks it where it is used)."""

    name: str
    help: str = ""
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    required: bool = False


def number(value) -> bool:
    """A finite int or float: ``inf`` and ``nan`` pass no check."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def listlike(value) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def boolean(value) -> bool:
    return isinstance(value, bool)


def at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda value: integer(value) and value >= minimum


def size(minimum: int) -> Callable[[Any], bool]:
    """null or [H, W] / [D, H, W] of integers >= ``minimum``."""
    return lambda value: (
        value is None
        or (listlike(value) and len(value) in (2, 3) and all(integer(n) and n >= minimum for n in value))
    )


def one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _epochs_or_steps(value) -> bool:
    return integer(value) and (value >= 1 or value == -1)


def _devices(value) -> bool:
    """Lightning's forms: a count >= 1, -1 (all), "auto", or a list of device indices."""
    if integer(value):
        return value >= 1 or value == -1
    if listlike(value):
        return len(value) > 0 and all(integer(index) and index >= 0 for index in value)
    return value == "auto" or (isinstance(value, str) and re.fullmatch(r"\d+(,\s*\d+)*,?", value) is not None)


def _fraction_or_count(value) -> bool:
    """Lightning's ``limit_*_batches`` / ``val_check_interval``: a fraction in (0, 1] or a count."""
    if value is None:
        return True
    if isinstance(value, float):
        return 0 < value <= 1
    return integer(value) and value >= 0


def _class_weights(value) -> bool:
    return value in (None, MEDIAN_FREQUENCY) or (
        listlike(value) and all(number(x) and x >= 0 for x in value) and any(x > 0 for x in value)
    )


INTEGER_1 = "an integer >= 1"
FRACTION_OR_COUNT = "null, a fraction in (0, 1] or a count >= 0"

KEYS = (
    Key("seed", "seeds torch, numpy and the augmentations", integer, "an integer", required=True),
    Key(
        "task.monitor",
        "the validation score that picks best.ckpt and stops early",
        lambda v: isinstance(v, str) and v.startswith("val/") and len(v) > len("val/"),
        "val/NAME, a score the task logs at validation (val/mIoU, val/mDice, val/mask_AP, ...)",
    ),
    Key("data.root", "where the dataset lies (every data config but shapes needs it)"),
    Key("data.split", "the split to read (default: the validation split)"),
    Key("data.classes", "", lambda v: listlike(v) and len(v) > 0, "a non-empty list of class names", True),
    Key("data.num_classes", "", at_least(1), INTEGER_1, True),
    Key("data.in_channels", "", at_least(1), INTEGER_1, True),
    Key("data.ignore_index", "", lambda v: integer(v) and 0 <= v <= 255, "an integer in [0, 255]", True),
    Key("data.batch_size", "images per process and step", at_least(1), INTEGER_1, True),
    Key("data.val_batch_size", "", lambda v: v is None or at_least(1)(v), "null or an integer >= 1"),
    Key(
        "data.num_workers",
        "loader processes (default: from the machine's cores)",
        at_least(0),
        "an integer >= 0",
        True,
    ),
    Key("data.crop_size", "training crop [H, W]", size(1), "null or [H, W] (or [D, H, W]) of integers >= 1"),
    Key("data.mean", "", lambda v: listlike(v) and all(number(x) for x in v), "a list of numbers", True),
    Key(
        "data.std",
        "",
        lambda v: listlike(v) and all(number(x) and x > 0 for x in v),
        "a list of numbers > 0",
        True,
    ),
    Key(
        "loss.class_weights",
        f"a weight per class, or {MEDIAN_FREQUENCY} (SegNet's, from the train split)",
        _class_weights,
        f"null, {MEDIAN_FREQUENCY} (computed from the train split) or a list of finite numbers >= 0, one per "
        "class, not all 0",
    ),
    Key(
        "optimizer.lr",
        "learning rate (auto_scale_lr.enable=true scales it to the batch size)",
        lambda v: number(v) and v > 0,
        "a finite number > 0",
        True,
    ),
    Key("optimizer.weight_decay", "", lambda v: number(v) and v >= 0, "a finite number >= 0"),
    Key("optimizer.momentum", "", lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Key(
        "trainer.max_epochs",
        "epochs to train",
        lambda v: v is None or _epochs_or_steps(v),
        "an integer >= 1 (or -1: no limit)",
    ),
    Key("trainer.max_steps", "", _epochs_or_steps, "an integer >= 1 (or -1: no limit)"),
    Key(
        "trainer.devices",
        "GPUs or processes (trainer=ddp for several)",
        _devices,
        "an integer >= 1, -1 (every device), auto, or a list of device indices",
    ),
    Key(
        "trainer.gradient_clip_val",
        "",
        lambda v: v is None or (number(v) and v >= 0),
        "null or a number >= 0",
    ),
    Key("trainer.accumulate_grad_batches", "", at_least(1), INTEGER_1),
    Key("trainer.num_nodes", "", at_least(1), INTEGER_1),
    Key("trainer.sync_batchnorm", "", boolean, "true or false"),
    Key("trainer.limit_train_batches", "", _fraction_or_count, FRACTION_OR_COUNT),
    Key("trainer.limit_val_batches", "", _fraction_or_count, FRACTION_OR_COUNT),
    Key("trainer.val_check_interval", "", _fraction_or_count, "null, a fraction in (0, 1] or a count >= 1"),
    Key(
        "runtime.threads",
        "torch CPU threads per process (default: from cores and workers)",
        lambda v: v is None or at_least(1)(v),
        "null (chosen from the cores) or an integer >= 1",
    ),
    Key(
        "runtime.channels_last",
        "true: the model and its inputs in channels_last memory format (trainer=gpu sets it)",
        boolean,
        "true or false",
    ),
    Key("auto_scale_lr.base_batch_size", "", at_least(1), INTEGER_1),
    Key("resume", "true: continue the newest run of this run_name; or a checkpoint path"),
    Key("run_name", "runs are grouped under outputs/<run_name>/ (default: <data>-<model>)"),
    Key("ckpt", "the .ckpt segtrain train wrote (predict: also a model.onnx / model.pt with its .json)"),
    Key("input", "an image file or a directory of images"),
    Key("output", "predict: the directory for the masks, outside the input; export: the file to write"),
    Key("text", "task=referring: the expression to segment in every input image"),
    Key("save_predictions", "true: also write predictions/ (the dataset's encoding, or a COCO results json)"),
    Key("format", "onnx | torchscript"),
    Key("export.check_sizes", "the [H, W] sizes compared with PyTorch (batch 1, then 2)"),
    Key(
        "export.atol",
        "largest difference from PyTorch allowed",
        lambda v: number(v) and v >= 0,
        "a number >= 0",
    ),
    Key("export.opset", "ONNX opset"),
    Key("bench.steps", "batches per loop"),
    Key("bench.warmup", "first steps of each loop left out"),
    Key("bench.rounds", "plain / segtrain loops alternate this many times"),
    Key("bench.data", "true: time the training DataLoader alone"),
    Key("bench.data_workers", "with bench.data=true: worker counts to time, e.g. [0,4,8]"),
    Key("bench.peak_tflops", "the device's peak for MFU (default: known GPUs' data sheets)"),
    Key(
        "bench.profile",
        "N > 0: profile N steps after warm-up of each loop in one more round (tables, traces)",
        at_least(0),
        "an integer >= 0",
    ),
    Key("check.workers", "scan processes (default: one per core)"),
)

#: The instance and referring tasks' cut of mask probabilities.
MASK_THRESHOLD = Key(
    "inference.mask_threshold",
    "pixels whose mask probability is above it are the object",
    lambda v: number(v) and 0 < v < 1,
    "a probability in (0, 1): mask pixels above it are the object (0.5 is the papers')",
)
