"""Label-encoding diagnostics shared by the readers, the first training batches and ``check-data``.

mmsegmentation's most common silent failure is a dataset whose masks are encoded differently
from what the config says ({0, 255} binary masks, ids shifted by one, Cityscapes' 34 label ids):
training runs and reports 0 IoU. Each diagnosis here names the problem and the exact override
that fixes it, and every place that checks labels uses the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from segtrain.errors import SegtrainError

#: Smaller images break resizing (OpenCV cannot scale 1 pixel to 0) and hold nothing to segment.
MIN_IMAGE_SIDE = 2
CITYSCAPES_LABEL_IDS = 34
CITYSCAPES_TRAIN_IDS = 19


@dataclass(frozen=True)
class Finding:
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem} Fix: {self.fix}"


@dataclass
class DataReport:
    """What ``segtrain check-data`` prints, the same for every task: what was scanned, a table of what was
    found (class shares, instances per category, ...), the warnings, and each error with its fix.
    ``scan``: the task's own scan, for what else reads it (class counts, images per second)."""

    header: str
    table: list[str] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scan: Any = None

    def __str__(self) -> str:
        lines = [self.header, *self.table]
        lines += [f"warning: {text}" for text in self.warnings]
        lines += [f"error: {finding.problem}\n  fix: {finding.fix}" for finding in self.errors]
        lines.append("OK: no errors found" if not self.errors else f"{len(self.errors)} error(s) found")
        return "\n".join(lines)


def out_of_range(values: Iterable[int], num_classes: int, ignore_index: int) -> list[int]:
    return sorted(int(v) for v in values if v >= num_classes and v != ignore_index)


def diagnose_values(
    values: Iterable[int], num_classes: int, ignore_index: int, identity: bool
) -> Finding | None:
    """Why masks hold ids >= num_classes, and the override that fixes it (``identity``: no label or
    colour map set)."""
    values = sorted(int(v) for v in values)
    bad = out_of_range(values, num_classes, ignore_index)
    if not bad:
        return None
    problem = f"label values {bad} are >= num_classes={num_classes} (ignore_index={ignore_index})."
    if not identity:
        return Finding(
            problem,
            "the values above survive data.label_map / data.reduce_zero_label / data.color_map; extend the "
            "map",
        )
    if set(values) <= {0, 255} and num_classes == 2:
        return Finding(problem + " The masks are {0, 255} binary masks.", "data.label_map={255: 1}")
    if min(values) >= 1 and set(bad) == {num_classes, num_classes + 1}:
        return Finding(
            problem
            + f" The ids look shifted by one with void shifted too: classes stored as 1..{num_classes} "
            f"and void as {num_classes + 1}.",
            f"data.label_map={{{num_classes + 1}: {ignore_index}}} data.reduce_zero_label=true",
        )
    if max(bad) == num_classes:
        return Finding(
            problem + " The ids look shifted by one (0 = unlabelled, classes from 1, as ADE20K stores them).",
            "data.reduce_zero_label=true",
        )
    if num_classes == CITYSCAPES_TRAIN_IDS and max(bad) < CITYSCAPES_LABEL_IDS:
        return Finding(
            problem
            + " These are Cityscapes' 34 label ids (gtFine_labelIds) where its 19 train ids are expected.",
            "data.label_map=cityscapes",
        )
    return Finding(
        problem, "fix the masks, list every class in data.classes, or remap values with data.label_map"
    )


def diagnose_binary(
    present: Iterable[int], num_classes: int, ignore_index: int, identity: bool
) -> Finding | None:
    """Only class 0 and ignore_index occur: 0/255 masks read with 255 as ignore, so nothing but 0 trains."""
    present = set(int(v) for v in present)
    if not identity or num_classes < 2 or ignore_index != 255 or present != {0, 255}:
        return None
    return Finding(
        "the masks hold only 0 and 255, and 255 is ignore_index: the foreground is never trained "
        "({0, 255} binary masks).",
        "data.label_map={255: 1}",
    )


def format_size(shape) -> str:
    """``H x W`` (``D x H x W`` for volumes): segtrain prints every size in array order."""
    return " x ".join(str(n) for n in shape) + (" (H x W)" if len(shape) == 2 else " (D x H x W)")


def check_pair(
    image: np.ndarray, mask: np.ndarray, mask_path, num_classes: int, ignore_index: int, identity: bool = True
) -> None:
    """Size and value checks that catch a wrongly encoded dataset on its first batches."""
    if min(mask.shape) < MIN_IMAGE_SIDE:
        raise SegtrainError(
            f"{mask_path} is {format_size(mask.shape)} pixels: images and masks need at least "
            f"{MIN_IMAGE_SIDE} pixels a side. Remove it from the split"
        )
    if image.shape[: mask.ndim] != mask.shape:
        raise SegtrainError(
            f"mask {mask_path} is {format_size(mask.shape)} but its image is "
            f"{format_size(image.shape[: mask.ndim])}; "
            "masks must match their images pixel for pixel"
        )
    if mask.max(initial=0) >= num_classes:
        finding = diagnose_values(np.unique(mask), num_classes, ignore_index, identity)
        if finding:
            raise SegtrainError(f"mask {mask_path}: {finding}")
