"""Segmentation metrics.

Semantic: one confusion matrix, a torchmetrics ``Metric`` state summed across ranks; every score derives
from it. Classes absent from both the ground truth and the predictions have no defined IoU; they are
reported as NaN and left out of the means.

Instance: COCO's box and mask AP, computed by pycocotools' COCOeval itself on the gathered detections.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
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


#: COCOeval's summary scores, in the order of ``COCOeval.stats``.
COCO_SCORES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_results(
    output: dict, image_id: int, category_ids: Sequence[int], mask_threshold: float
) -> list[dict]:
    """One detector output (boxes xyxy, labels 1..K, scores, masks [N,1,H,W] probabilities) as COCO
    results: xywh boxes, the json's category ids, and masks cut at ``mask_threshold`` as RLE."""
    from pycocotools import mask as mask_utils

    boxes = output["boxes"].detach().float().cpu().clone()  # on the CPU .cpu() would return the output itself
    boxes[:, 2:] -= boxes[:, :2]
    labels = output["labels"].cpu().tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    results = [
        {"image_id": image_id, "category_id": int(category_ids[label - 1]), "bbox": box, "score": score}
        for box, label, score in zip(boxes.tolist(), labels, scores)
    ]
    if "masks" in output and results:
        binary = (output["masks"][:, 0] > mask_threshold).to(torch.uint8).cpu().numpy()
        for result, rle in zip(results, mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))):
            result["segmentation"] = {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode()}
    return results


def coco_scores(
    ground_truth,
    results: list[dict],
    image_ids: Sequence[int],
    classes: Sequence[str],
    category_ids: Sequence[int],
) -> dict:
    """COCO box and mask AP (pycocotools' COCOeval) of ``results`` on ``image_ids``, and AP per class
    (``classes`` named by their json ``category_ids``).

    Scores are fractions; -1 where COCOeval has nothing to score (no ground truth of that size or class).
    """
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    result = {
        "images": len(image_ids),
        "detections": len(results),
        "per_class": {name: {} for name in classes},
    }
    result["instances"] = len(ground_truth.getAnnIds(imgIds=list(image_ids), iscrowd=False))
    kinds = {"bbox": "box", "segm": "mask"}
    for kind, prefix in kinds.items():
        if kind == "segm" and results and "segmentation" not in results[0]:
            continue
        if not results:
            result.update({f"{prefix}_{name}": 0.0 for name in COCO_SCORES})
            for name in classes:
                result["per_class"][name][f"{prefix}_AP"] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), kind)
            evaluation.params.imgIds = sorted(image_ids)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        result.update(
            {f"{prefix}_{name}": float(value) for name, value in zip(COCO_SCORES, evaluation.stats)}
        )
        # precision[iou threshold, recall, category, area "all", max detections 100]
        precision = evaluation.eval["precision"][:, :, :, 0, -1]
        for name, category in zip(classes, category_ids):
            values = precision[:, :, evaluation.params.catIds.index(category)]
            values = values[values > -1]
            result["per_class"][name][f"{prefix}_AP"] = float(values.mean()) if values.size else -1.0
    return result


def format_coco_table(result: dict, title: str = "") -> str:
    """Per-class box / mask AP and COCO's summary scores, in percent ("-" where nothing was scored)."""
    width = max([len(name) for name in result["per_class"]] + [5])
    kinds = [prefix for prefix in ("box", "mask") if f"{prefix}_AP" in result]
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{prefix + ' AP':>8}" for prefix in kinds))
    for name, row in result["per_class"].items():
        cells = "  ".join(f"{_ap(row.get(f'{prefix}_AP')):>8}" for prefix in kinds)
        lines.append(f"{name:<{width}}  {cells}")
    for prefix in kinds:
        lines.append(
            f"{prefix:>4}: " + "  ".join(f"{name} {_ap(result[f'{prefix}_{name}'])}" for name in COCO_SCORES)
        )
    lines.append(
        f"{result['images']} images, {result['instances']} instances, {result['detections']} detections"
    )
    return "\n".join(lines)


def _ap(value: float | None) -> str:
    return percent(None if value is None or value < 0 else value)


#: The IoU thresholds of referring segmentation's precision (Hu et al. 2016, Table 1).
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def referring_scores(intersections: torch.Tensor, unions: torch.Tensor) -> dict:
    """Overall IoU (summed intersections over summed unions, which favours large objects), mean IoU (of
    the per-expression IoUs) and precision@t, the share of expressions whose IoU is at least t. An
    expression whose object and prediction are both empty counts as IoU 1."""
    intersections, unions = intersections.double().cpu(), unions.double().cpu()
    ious = torch.where(unions > 0, intersections / unions.clamp(min=1), torch.ones_like(unions))
    count = len(ious)
    result = {
        "overall_IoU": float(intersections.sum() / unions.sum().clamp(min=1)),
        "mean_IoU": float(ious.mean()) if count else float("nan"),
        "expressions": count,
    }
    for threshold in PRECISION_THRESHOLDS:
        result[f"precision@{threshold}"] = (
            float((ious >= threshold).double().mean()) if count else float("nan")
        )
    return result


def format_referring_table(result: dict, title: str = "") -> str:
    lines = [title] if title else []
    lines.append("  ".join(f"{key:>13}" for key in ("overall IoU", "mean IoU")))
    lines.append("  ".join(f"{percent(result[key]):>13}" for key in ("overall_IoU", "mean_IoU")))
    lines.append("  ".join(f"{'prec@' + str(t):>9}" for t in PRECISION_THRESHOLDS))
    lines.append("  ".join(f"{percent(result[f'precision@{t}']):>9}" for t in PRECISION_THRESHOLDS))
    return "\n".join(lines)
