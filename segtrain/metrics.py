"""Segmentation metrics from one confusion matrix.

The matrix is a torchmetrics ``Metric`` state summed across ranks; every score derives from it.
Classes absent from both the ground truth and the predictions have no defined IoU; they are
reported as NaN and left out of the means.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric


class ConfusionMatrix(Metric):
    """``confmat[t, p]`` counts pixels of ground-truth class t predicted as p."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        target = target.long()
        valid = target != self.ignore_index
        index = target[valid] * self.num_classes + preds[valid].long()
        self.confmat += torch.bincount(index, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def compute(self) -> torch.Tensor:
        return self.confmat


def scores(confmat: torch.Tensor, class_names: Sequence[str]) -> dict:
    """mIoU, mDice, aAcc, mAcc, fwIoU, per-class IoU / Dice / Acc, and the majority-class baseline."""
    cm = confmat.double().cpu()
    tp = cm.diag()
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    present = union > 0
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(present, tp / union.clamp(min=1), nan)
    dice = torch.where(present, 2 * tp / (gt + pred).clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = gt.sum().clamp(min=1)
    freq = gt / total
    return {
        "mIoU": iou.nanmean().item(),
        "mDice": dice.nanmean().item(),
        "aAcc": (tp.sum() / total).item(),
        "mAcc": acc.nanmean().item(),
        "fwIoU": (freq[present] * iou[present]).sum().item(),
        # A predictor answering the most frequent class everywhere: IoU = its pixel share there,
        # 0 for every other class present in the ground truth.
        "majority_mIoU": (freq.max() / max(int((gt > 0).sum()), 1)).item(),
        "pixels": int(gt.sum()),
        "per_class": {
            name: {"IoU": iou[i].item(), "Dice": dice[i].item(), "Acc": acc[i].item(), "pixels": int(gt[i])}
            for i, name in enumerate(class_names)
        },
        "absent_classes": [name for i, name in enumerate(class_names) if not present[i]],
    }


def percent(value: float | None) -> str:
    """How segtrain shows every score: percent with 2 decimals, "-" where undefined (json files keep
    fractions)."""
    return "-" if value is None or value != value else f"{value * 100:.2f}"


def format_table(result: dict, title: str = "") -> str:
    """Per-class IoU / Dice table and the summary scores, as plain text."""
    width = max([len(name) for name in result["per_class"]] + [5])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'pixels':>11}")
    for name, row in result["per_class"].items():
        cells = "  ".join(f"{percent(row[key]):>7}" for key in ("IoU", "Dice", "Acc"))
        lines.append(f"{name:<{width}}  {cells}  {row['pixels']:>11}")
    lines.append(
        "  ".join(f"{key} {result[key] * 100:.2f}" for key in ("mIoU", "mDice", "aAcc", "mAcc", "fwIoU"))
        + f"  (majority-class baseline mIoU {result['majority_mIoU'] * 100:.2f})"
    )
    if result["absent_classes"]:
        lines.append(
            "classes absent from both ground truth and predictions, left out of the means: "
            + ", ".join(result["absent_classes"])
        )
    return "\n".join(lines)
