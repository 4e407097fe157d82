"""Panoptic FPN's inference merge (Kirillov et al. 2019, section 3; panopticapi's
``combine_semantic_and_instance_predictions``): thing masks are placed in the order of their scores, each
skipped when more than ``overlap_threshold`` of it is already taken and otherwise keeping only its free
pixels; the semantic map's stuff classes then fill what is left, each kept only where it covers at least
``stuff_area`` pixels. Pixels left over are unlabelled (segment id 0).

Plain numpy, so that predict runs it on a checkpoint's outputs and on an export's alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segtrain.data.datasets.coco_panoptic import VOID


def merge(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    semantic: np.ndarray,
    thing_categories: Sequence[int],
    stuff_categories: Sequence[int],
    inference: dict,
) -> tuple[np.ndarray, list[dict]]:
    """(segment ids HxW int32, segments_info) from detections (``labels`` 1..T, ``scores``, ``masks``
    [N,1,H,W] probabilities) and the semantic branch's logits or classes (``semantic``: [S+1,H,W], or HxW of
    0 = things and 1..S = stuff)."""
    classes = semantic.argmax(0) if semantic.ndim == 3 else semantic
    ids = np.full(classes.shape, VOID, np.int32)
    segments: list[dict] = []
    for index in np.argsort(-np.asarray(scores), kind="stable"):
        score = float(scores[index])
        if score < inference["score_threshold"]:
            break
        mask = np.asarray(masks[index]).reshape(classes.shape) > inference["mask_threshold"]
        area = int(mask.sum())
        if area == 0:
            continue
        taken = int((mask & (ids != VOID)).sum())
        if taken / area > inference["overlap_threshold"]:
            continue
        mask &= ids == VOID
        segment = len(segments) + 1
        ids[mask] = segment
        category = thing_categories[int(labels[index]) - 1]
        segments.append({"id": segment, "category_id": category, "isthing": 1, "score": score})
    for stuff in np.unique(classes).tolist():
        if stuff == 0:  # the branch's "other": thing pixels, left to the detections
            continue
        region = (classes == stuff) & (ids == VOID)
        area = int(region.sum())
        if area < inference["stuff_area"]:
            continue
        segment = len(segments) + 1
        ids[region] = segment
        segments.append({"id": segment, "category_id": stuff_categories[stuff - 1], "isthing": 0})
    for segment in segments:
        region = ids == segment["id"]
        rows, columns = np.nonzero(region)
        if len(rows):
            x, y = int(columns.min()), int(rows.min())
            segment["bbox"] = [x, y, int(columns.max()) - x + 1, int(rows.max()) - y + 1]
        segment["area"] = int(region.sum())
    return ids, [segment for segment in segments if segment["area"]]
