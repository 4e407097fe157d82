"""segtrain's Cityscapes numbers agree with the official evaluation (cityscapesscripts) to 1e-6, scored
at the images' own resolution although validation resizes them."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from segtrain.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from segtrain.metrics import ConfusionMatrix, scores
from tests.conftest import checkpoints, run_cli
from tests.layouts import make_cityscapes_tree

ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

#: The label ids of the 19 evaluated classes.
EVALUATED = set(LABEL_ID_TO_TRAIN_ID)
#: 48x96 images validated at 20x40: a factor of 2.4, so block edges fall between pixels.
RESIZE = (
    "data.val_transforms=[{_target_: albumentations.Resize, height: 20, width: 40, interpolation: 1, "
    "mask_interpolation: 0}]"
)


@pytest.fixture(scope="module")
def cityscapes_run(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("cityscapes")
    root = make_cityscapes_tree(cwd / "cityscapes", per_split=8, size=(48, 96))
    common = [f"data.root={root}", "data.num_workers=0"]
    train = run_cli(
        "train",
        "data=cityscapes",
        *common,
        RESIZE,
        "model.base_channels=4",
        "model.depth=2",
        "data.crop_size=[48,96]",
        "data.batch_size=2",
        "trainer.max_epochs=10",
        "optimizer.lr=0.01",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
        cwd=cwd,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "validation after epoch 10, inference whole" in train.stdout
    assert "scored at each image's own resolution" in train.stdout
    (best,) = checkpoints(cwd / "outputs", "best.ckpt")
    return {"cwd": cwd, "root": root, "common": common, "best": best}


def evaluate(run: dict, *overrides: str) -> tuple[dict, str, object]:
    result = run_cli("eval", f"ckpt={run['best']}", *run["common"], *overrides, cwd=run["cwd"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics_path = max(
        (run["cwd"] / "outputs" / "eval").rglob("metrics.json"), key=lambda p: p.stat().st_mtime
    )
    return json.loads(metrics_path.read_text()), result.stdout, metrics_path.parent


@pytest.mark.slow
def test_eval_predictions_in_official_format_match_cityscapesscripts(cityscapes_run, tmp_path):
    ours, stdout, run_dir = evaluate(cityscapes_run, "save_predictions=true")
    assert "scored at each image's own resolution" in stdout
    assert ours["inference"]["score_resolution"] == "original"
    assert ours["pixels"] == sum(  # every labelled pixel of the published 48x96 annotations
        int(np.isin(np.asarray(Image.open(gt)), list(EVALUATED)).sum())
        for gt in (cityscapes_run["root"] / "gtFine" / "val").rglob("*_gtFine_labelIds.png")
    )

    ground_truth = sorted((cityscapes_run["root"] / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    predictions = [
        run_dir / "predictions" / gt.name.replace("_gtFine_labelIds", "_leftImg8bit") for gt in ground_truth
    ]
    for prediction, gt in zip(predictions, ground_truth):
        stored = np.asarray(Image.open(prediction))
        assert stored.shape == np.asarray(Image.open(gt)).shape == (48, 96)
        assert set(np.unique(stored).tolist()) <= EVALUATED

    ev.args.evalInstLevelScore = False
    ev.args.quiet = True
    ev.args.JSONOutput = False
    ev.args.exportFile = str(tmp_path / "official.json")
    official = ev.evaluateImgLists([str(p) for p in predictions], [str(p) for p in ground_truth], ev.args)

    compared = 0
    for name, row in ours["per_class"].items():
        theirs = official["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(row["IoU"]), name
        else:
            assert abs(row["IoU"] - theirs) <= 1e-6, (name, row["IoU"], theirs)
            compared += 1
    assert compared >= 10
    assert sum(row["IoU"] > 0 for row in ours["per_class"].values()) >= 3  # not a run of zeros
    assert abs(ours["mIoU"] - official["averageScoreClasses"]) <= 1e-6


@pytest.mark.slow
def test_the_reported_score_is_the_original_resolution_one(cityscapes_run):
    """Scoring at the transformed size gives another number; segtrain reports the one that the written
    full-size predictions give against the published annotations."""
    ours, _, run_dir = evaluate(cityscapes_run, "save_predictions=true")
    transformed, stdout, _ = evaluate(cityscapes_run, "inference.score_resolution=transformed")
    assert "scored at the size data.val_transforms give (inference.score_resolution=transformed)" in stdout
    assert transformed["pixels"] < ours["pixels"]
    assert abs(transformed["mIoU"] - ours["mIoU"]) > 1e-6  # both exact: any difference is real

    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    confmat = ConfusionMatrix(19)
    for gt in sorted((cityscapes_run["root"] / "gtFine" / "val").rglob("*_gtFine_labelIds.png")):
        prediction = run_dir / "predictions" / gt.name.replace("_gtFine_labelIds", "_leftImg8bit")
        pred = lut[np.asarray(Image.open(prediction))]
        confmat.update(torch_of(pred), torch_of(lut[np.asarray(Image.open(gt))]))
    recomputed = scores(confmat.compute(), list(ours["per_class"]))
    assert abs(recomputed["mIoU"] - ours["mIoU"]) <= 1e-9


def torch_of(array: np.ndarray):
    import torch

    return torch.from_numpy(array.astype(np.int64))
