"""Panoptic quality (Kirillov, He, Girshick, Rother, Dollar. "Panoptic Segmentation", CVPR 2019), computed
as the official evaluators compute it: panopticapi's ``pq_compute`` for COCO, and cityscapesscripts'
``evalPanopticSemanticLabeling``, which follows it.

Per image, a predicted and a ground-truth segment of one category match when their IoU is above 0.5,
where the union leaves out the predicted pixels that fall on void (id 0). Unmatched ground-truth segments
are false negatives, except crowd regions; an unmatched predicted segment is a false positive unless more
than half of it lies on void or on the crowd region of its category. Per category,
PQ = sum of matched IoUs / (TP + FP/2 + FN/2) = SQ x RQ; PQ, SQ and RQ are averaged over the categories
with any TP, FP or FN, overall, for things and for stuff. Ground-truth areas are the annotation's
``area`` where it gives one, as the official evaluators read them.

The counts are one array (per category: IoU sum, TP, FP, FN), summed across DDP ranks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segtrain.data.datasets.coco_panoptic import VOID

#: ids are at most 256^3 - 1 (three bytes of RGB): pairs of ids are counted as gt * OFFSET + prediction.
OFFSET = 256**3
#: The IoU above which two segments are the same.
MATCH_IOU = 0.5


class PanopticQuality:
    """PQ, SQ and RQ over ``categories`` (``{category id: is a thing}``), fed one image at a time."""

    def __init__(self, categories: dict[int, bool]):
        self.categories = dict(categories)
        self.row = {category: index for index, category in enumerate(self.categories)}
        #: Per category: IoU sum, TP, FP, FN.
        self.counts = np.zeros((len(self.categories), 4), dtype=np.float64)

    def update(
        self,
        truth: np.ndarray,
        truth_segments: Sequence[dict],
        predicted: np.ndarray,
        predicted_segments: Sequence[dict],
    ) -> None:
        """One image: segment-id maps (HxW) and their segments (``id``, ``category_id``; the truth's also
        ``iscrowd`` and, where the annotation gives it, ``area``)."""
        truth_info = {int(s["id"]): s for s in truth_segments}
        predicted_info = {int(s["id"]): s for s in predicted_segments}
        predicted_area = self._check_predicted(predicted, predicted_info)
        ids, counts = np.unique(truth, return_counts=True)
        truth_area = {
            label: float(truth_info[label].get("area", count) if label in truth_info else count)
            for label, count in zip(ids.tolist(), counts.tolist())
        }
        for label in truth_info:
            truth_area.setdefault(label, float(truth_info[label].get("area", 0)))
        pairs, overlaps = np.unique(
            truth.astype(np.int64) * OFFSET + predicted.astype(np.int64), return_counts=True
        )
        overlap = {(int(p // OFFSET), int(p % OFFSET)): float(n) for p, n in zip(pairs, overlaps)}

        matched_truth, matched_prediction = set(), set()
        for (truth_id, predicted_id), intersection in overlap.items():
            if truth_id not in truth_info or predicted_id not in predicted_info:
                continue
            category = truth_info[truth_id]["category_id"]
            if (
                truth_info[truth_id].get("iscrowd", 0) == 1
                or category != predicted_info[predicted_id]["category_id"]
            ):
                continue
            union = (
                predicted_area[predicted_id]
                + truth_area[truth_id]
                - intersection
                - overlap.get((VOID, predicted_id), 0.0)
            )
            iou = intersection / union
            if iou > MATCH_IOU:
                self.counts[self.row[category]] += (iou, 1, 0, 0)
                matched_truth.add(truth_id)
                matched_prediction.add(predicted_id)

        # As the official code: the crowd region of a category is its last crowd segment.
        crowd = {}
        for truth_id, info in truth_info.items():
            if truth_id in matched_truth:
                continue
            if info.get("iscrowd", 0) == 1:
                crowd[info["category_id"]] = truth_id
                continue
            self.counts[self.row[info["category_id"]], 3] += 1
        for predicted_id, info in predicted_info.items():
            if predicted_id in matched_prediction:
                continue
            ignored = overlap.get((VOID, predicted_id), 0.0)
            if info["category_id"] in crowd:
                ignored += overlap.get((crowd[info["category_id"]], predicted_id), 0.0)
            if ignored / predicted_area[predicted_id] > MATCH_IOU:
                continue
            self.counts[self.row[info["category_id"]], 2] += 1

    def _check_predicted(self, predicted: np.ndarray, info: dict[int, dict]) -> dict[int, float]:
        """Each predicted segment's area; the PNG and the segments must list the same ids, of known
        categories (the official evaluators refuse such predictions too)."""
        ids, counts = np.unique(predicted, return_counts=True)
        area = {label: float(count) for label, count in zip(ids.tolist(), counts.tolist()) if label != VOID}
        unlisted = sorted(set(area) - set(info))
        if unlisted:
            raise ValueError(f"segment ids {unlisted[:5]} are in the PNG but not in its segments_info")
        absent = sorted(set(info) - set(area))
        if absent:
            raise ValueError(f"segment ids {absent[:5]} are in segments_info but not in the PNG")
        unknown = sorted({s["category_id"] for s in info.values()} - set(self.categories))
        if unknown:
            raise ValueError(f"category ids {unknown[:5]} are not among the dataset's categories")
        return area

    def merge(self, counts: np.ndarray) -> None:
        """Adds another accumulator's ``counts`` (another rank's images)."""
        self.counts += counts

    def compute(self) -> dict:
        """``PQ``, ``SQ``, ``RQ`` (in [0, 1]) and ``n`` (categories counted) overall, ``*_th`` for things
        and ``*_st`` for stuff; ``per_category``: each counted category's ``pq``, ``sq`` and ``rq``."""
        per_category = {}
        for category, row in zip(self.categories, self.counts):
            iou, tp, fp, fn = (float(value) for value in row)  # plain floats: checkpoints keep the scores
            if tp + fp + fn == 0:
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_category[category] = {
                "pq": iou / denominator,
                "sq": iou / tp if tp else 0.0,
                "rq": tp / denominator,
            }
        result = {"per_category": per_category}
        for suffix, things in (("", None), ("_th", True), ("_st", False)):
            counted = [s for c, s in per_category.items() if things is None or self.categories[c] == things]
            for key in ("pq", "sq", "rq"):
                mean = sum(s[key] for s in counted) / len(counted) if counted else 0.0
                result[f"{key.upper()}{suffix}"] = mean
            result[f"n{suffix}"] = len(counted)
        return result
