"""The README's first command: the default run learns the embedded dataset (about 4 CPU minutes)."""

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_default_run_reaches_miou_080_far_above_majority_baseline(tmp_path):
    result = run_cli("callbacks.progress_bar=null", cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = (tmp_path / "outputs").rglob("val_metrics.json")
    scores = json.loads(metrics.read_text())
    # The augmentation is seeded with the run (seed covers albumentations and the workers): the run
    # repeats, at 0.814 on this machine twice, far above the majority-class baseline of ~0.13.
    assert scores["best_val_mIoU"] >= 0.80, scores
    assert scores["majority_mIoU"] < 0.2
    for name in ("background", "disc", "square", "triangle", "cross", "ring"):
        assert name in result.stdout
