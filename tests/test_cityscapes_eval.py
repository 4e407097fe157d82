"""segtrain's Cityscapes numbers agree with the official evaluation (cityscapesscripts) to 1e-6."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from tests.conftest import checkpoints, run_cli
from tests.layouts import make_cityscapes_tree

ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")


def test_eval_predictions_in_official_format_match_cityscapesscripts(tmp_path):
    root = make_cityscapes_tree(tmp_path / "cityscapes", per_split=8, size=(48, 96))
    common = [f"data.root={root}", "data.num_workers=0"]
    train = run_cli(
        "train",
        "data=cityscapes",
        *common,
        "model.base_channels=4",
        "model.depth=2",
        "data.crop_size=[48,96]",
        "data.batch_size=2",
        "trainer.max_epochs=10",
        "optimizer.lr=0.01",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    (best,) = checkpoints(tmp_path / "outputs", "best.ckpt")
    result = run_cli("eval", f"ckpt={best}", *common, "save_predictions=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_path,) = (tmp_path / "outputs" / "eval").rglob("metrics.json")
    ours = json.loads(metrics_path.read_text())

    ground_truth = sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    predictions = [
        metrics_path.parent / "predictions" / gt.name.replace("_gtFine_labelIds", "_leftImg8bit")
        for gt in ground_truth
    ]
    for prediction, gt in zip(predictions, ground_truth):
        stored = np.asarray(Image.open(prediction))
        assert stored.shape == np.asarray(Image.open(gt)).shape
        assert set(np.unique(stored).tolist()) <= {
            7,
            8,
            11,
            12,
            13,
            17,
            19,
            20,
            21,
            22,
            23,
            24,
            25,
            26,
            27,
            28,
            31,
            32,
            33,
        }

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
