import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from segtrain.metrics import ConfusionMatrix, format_table, scores


def numpy_reference(preds: np.ndarray, target: np.ndarray, num_classes: int, ignore: int) -> dict:
    """Independent per-class loop over pixels, no confusion matrix."""
    valid = target != ignore
    p, t = preds[valid], target[valid]
    ious, dices = [], []
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        size = np.sum(p == c) + np.sum(t == c)
        ious.append(inter / union if union else np.nan)
        dices.append(2 * inter / size if size else np.nan)
    accs = [
        np.sum((p == c) & (t == c)) / np.sum(t == c) if np.sum(t == c) else np.nan for c in range(num_classes)
    ]
    return {"iou": np.array(ious), "dice": np.array(dices), "aAcc": np.mean(p == t), "mAcc": np.nanmean(accs)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_numpy_with_ignore_and_absent_classes(seed):
    rng = np.random.default_rng(seed)
    num_classes, ignore = 6, 255
    # classes 0-3 occur, 4 only in predictions, 5 nowhere: absent from both -> excluded from means.
    target = rng.integers(0, 4, size=(3, 17, 23))
    target[rng.random(target.shape) < 0.2] = ignore
    preds = rng.integers(0, 5, size=target.shape)
    metric = ConfusionMatrix(num_classes, ignore)
    for i in range(3):  # accumulated over batches
        metric.update(torch.from_numpy(preds[i : i + 1]), torch.from_numpy(target[i : i + 1]).to(torch.uint8))
    result = scores(metric.compute(), [f"c{i}" for i in range(num_classes)])
    ref = numpy_reference(preds, target, num_classes, ignore)
    assert result["mIoU"] == pytest.approx(np.nanmean(ref["iou"]), abs=1e-12)
    assert result["mDice"] == pytest.approx(np.nanmean(ref["dice"]), abs=1e-12)
    assert result["aAcc"] == pytest.approx(ref["aAcc"], abs=1e-12)
    assert result["mAcc"] == pytest.approx(ref["mAcc"], abs=1e-12)
    for c in range(num_classes):
        got = result["per_class"][f"c{c}"]["IoU"]
        assert (np.isnan(got) and np.isnan(ref["iou"][c])) or got == pytest.approx(ref["iou"][c], abs=1e-12)
    assert result["per_class"]["c4"]["IoU"] == 0.0  # predicted but never true: counts as 0
    assert result["absent_classes"] == ["c5"]
    assert "left out of the means: c5" in format_table(result)


def test_fwiou_and_majority_baseline():
    target = torch.tensor([[0, 0, 0, 1]])
    preds = torch.tensor([[0, 0, 1, 1]])
    metric = ConfusionMatrix(2)
    metric.update(preds, target)
    result = scores(metric.compute(), ["a", "b"])
    # IoU a = 2/3, IoU b = 1/2; frequencies 3/4, 1/4
    assert result["fwIoU"] == pytest.approx(0.75 * 2 / 3 + 0.25 * 0.5)
    assert result["majority_mIoU"] == pytest.approx(0.75 / 2)


def test_miou_matches_torchmetrics_jaccard():
    rng = np.random.default_rng(7)
    target = torch.from_numpy(rng.integers(0, 5, size=(4, 32, 32)))
    target[torch.from_numpy(rng.random((4, 32, 32)) < 0.1)] = 255
    preds = torch.from_numpy(rng.integers(0, 5, size=(4, 32, 32)))
    metric = ConfusionMatrix(5, 255)
    metric.update(preds, target)
    ours = scores(metric.compute(), list("abcde"))
    reference = MulticlassJaccardIndex(num_classes=5, ignore_index=255, average="macro")(preds, target)
    assert ours["mIoU"] == pytest.approx(reference.item(), abs=1e-6)
    per_class = MulticlassJaccardIndex(num_classes=5, ignore_index=255, average="none")(preds, target)
    assert [ours["per_class"][k]["IoU"] for k in "abcde"] == pytest.approx(per_class.tolist(), abs=1e-6)


# COCO: segtrain's detections -> results conversion, scored by pycocotools, against known answers.
CATEGORY_IDS = [3, 7, 9]  # the json's ids, with gaps; the detector's labels are 1, 2, 3


def polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def coco_ground_truth(tmp_path):
    """Two 48x64 images: image 1 holds one object of each category, image 2 a category-7 object given as
    RLE."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    rle_mask = np.zeros((48, 64), np.uint8, order="F")
    rle_mask[5:25, 30:50] = 1
    rle = mask_utils.encode(rle_mask)
    boxes = {1: (2, 3, 10, 10), 2: (20, 4, 12, 16), 3: (4, 25, 20, 12)}
    annotations = [
        {"id": i, "image_id": 1, "category_id": CATEGORY_IDS[i - 1], "bbox": list(box),
         "area": box[2] * box[3], "segmentation": polygon(*box), "iscrowd": 0}
        for i, box in boxes.items()
    ] + [{"id": 4, "image_id": 2, "category_id": 7, "bbox": [30, 5, 20, 20], "area": 400,
          "segmentation": {"size": [48, 64], "counts": rle["counts"].decode()}, "iscrowd": 0}]  # fmt: skip
    data = {
        "images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 48}],
        "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS],
        "annotations": annotations,
    }
    path = tmp_path / "truth.json"
    path.write_text(__import__("json").dumps(data))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def detector_output(truth, image_id: int, detections: list[tuple]) -> dict:
    """(xywh box, label 1..3, score, mask or None) -> a detector output dict: boxes xyxy, masks as
    probabilities [N, 1, H, W]; a missing mask is the box filled."""
    boxes, labels, scores, masks = [], [], [], []
    for (x, y, w, h), label, score, mask in detections:
        boxes.append([x, y, x + w, y + h])
        labels.append(label)
        scores.append(score)
        if mask is None:
            mask = np.zeros((48, 64), np.float32)
            mask[round(y) : round(y + h), round(x) : round(x + w)] = 1
        masks.append(torch.as_tensor(mask, dtype=torch.float32) * 0.9)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
        "masks": torch.stack(masks)[:, None],
    }


def test_ground_truth_through_the_results_conversion_scores_ap_one(tmp_path):
    from segtrain.metrics import coco_results, coco_scores

    truth = coco_ground_truth(tmp_path)
    results = []
    for image_id in (1, 2):
        detections = []
        for annotation in truth.loadAnns(truth.getAnnIds(imgIds=[image_id])):
            label = CATEGORY_IDS.index(annotation["category_id"]) + 1
            detections.append(
                (annotation["bbox"], label, 1.0, truth.annToMask(annotation).astype(np.float32))
            )
        results += coco_results(detector_output(truth, image_id, detections), image_id, CATEGORY_IDS, 0.5)
    scores = coco_scores(truth, results, [1, 2], ["a", "b", "c"], CATEGORY_IDS)
    assert scores["box_AP"] == pytest.approx(1.0) and scores["mask_AP"] == pytest.approx(1.0)


def test_hand_made_detections_score_their_known_ap(tmp_path):
    """Category 3: found exactly, plus a lower-scored duplicate (a false positive after the true one: AP 1).
    Category 7: image 1's object found with its 12 px wide box shifted 2 px right (IoU 10/14 = 0.714: a match
    at the thresholds 0.50-0.70, 5 of 10), image 2's found exactly. Category 9: its object detected under
    the wrong class (AP 0; the wrong class's extra detection ranks below its true one). Masks are the boxes
    filled, so they overlap alike."""
    from segtrain.metrics import coco_results, coco_scores

    truth = coco_ground_truth(tmp_path)
    first = [
        ((2, 3, 10, 10), 1, 0.9, None),
        ((2, 3, 10, 10), 1, 0.5, None),  # duplicate
        ((22, 4, 12, 16), 2, 0.8, None),  # shifted 2 px
        ((4, 25, 20, 12), 1, 0.3, None),  # category 9's object, called category 3
    ]
    rle_object = ((30, 5, 20, 20), 2, 0.95, None)
    results = coco_results(detector_output(truth, 1, first), 1, CATEGORY_IDS, 0.5)
    results += coco_results(detector_output(truth, 2, [rle_object]), 2, CATEGORY_IDS, 0.5)
    scores = coco_scores(truth, results, [1, 2], ["a", "b", "c"], CATEGORY_IDS)
    per_class = scores["per_class"]
    assert per_class["a"]["box_AP"] == pytest.approx(1.0) and per_class["c"]["box_AP"] == pytest.approx(0.0)
    # Category 7: one exact match (score 0.95) and one at IoU 0.714 (score 0.8). Thresholds 0.50-0.70: recall
    # 2/2 at precision 1, AP 1. Above: recall 1/2 at precision 1, then a false positive: COCO's 101-point
    # interpolation gives precision 1 at the 51 recall points 0, 0.01, ..., 0.5 and 0 after, AP 51/101.
    expected_b = (5 * 1.0 + 5 * 51 / 101) / 10
    assert per_class["b"]["box_AP"] == pytest.approx(expected_b, abs=1e-3)
    assert per_class["b"]["mask_AP"] == pytest.approx(expected_b, abs=1e-3)
    assert scores["box_AP"] == pytest.approx((1.0 + expected_b + 0.0) / 3, abs=1e-3)
