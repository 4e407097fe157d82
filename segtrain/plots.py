"""The pictures people look at first, written into the run directory: training curves and per-class scores.

matplotlib draws with its headless Agg backend, so plots work on clusters and in CI without a display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict], path: Path, metrics: Sequence[str]) -> Path:
    """Train loss, learning rate, and the task's val ``metrics`` (percent) by epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, lr_axis, score_axis) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_axis.plot(epochs, [row.get("loss", math.nan) for row in history], marker="o")
    loss_axis.set(title="train loss (epoch mean)", xlabel="epoch")
    lr_axis.plot(epochs, [row.get("lr", math.nan) for row in history], marker="o")
    lr_axis.set(title="learning rate (epoch end)", xlabel="epoch", yscale="log")
    for key in metrics:
        score_axis.plot(
            epochs, [row.get(key, math.nan) * 100 for row in history], marker="o", label=f"val {key}"
        )
    score_axis.set(title="validation (%)", xlabel="epoch")
    score_axis.legend()
    for axis in (loss_axis, lr_axis, score_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def per_class_chart(
    result: dict, path: Path, title: str = "", score: str = "IoU", mean: str = "mIoU"
) -> Path:
    """A horizontal bar per class (``score`` in percent) and a line at ``mean``; classes absent from the
    split are marked."""
    plt = _pyplot()
    names = list(result["per_class"])
    values = [result["per_class"][name][score] * 100 for name in names]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(names) + 1.4))
    shown = [0 if math.isnan(v) else v for v in values]
    bars = axis.barh(range(len(names)), shown, color="tab:blue")
    for bar, value in zip(bars, values):
        label = "absent" if math.isnan(value) else f"{value:.2f}"
        axis.text(bar.get_width() + 0.5, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.invert_yaxis()
    axis.axvline(
        result[mean] * 100, color="tab:red", linestyle="--", label=f"{mean} {result[mean] * 100:.2f}"
    )
    axis.set(xlim=(0, 105), xlabel=f"{score} (%)", title=title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
