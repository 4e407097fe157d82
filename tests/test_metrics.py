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
