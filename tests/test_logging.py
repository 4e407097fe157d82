"""CSV, TensorBoard and offline wandb together, with prediction overlays; debug presets."""

import pytest
import yaml

from tests.conftest import TINY, run_cli


@pytest.mark.slow
def test_all_loggers_record_config_metrics_and_overlays(tmp_path):
    result = run_cli(*TINY, "logger=many", cwd=tmp_path, env={"WANDB_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    assert "val/mIoU" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert yaml.safe_load((run_dir / "hparams.yaml").read_text())["data"]["name"] == "shapes"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    # Offline wandb keeps the run's config in its record file until `wandb sync`.
    (record,) = wandb_run.glob("run-*.wandb")
    assert b"segtrain.data.datamodule.SegDataModule" in record.read_bytes()
    assert list((wandb_run / "files" / "media" / "images").rglob("*.png")), "no overlays logged to wandb"


def test_fast_dev_run_preset(tmp_path):
    result = run_cli(*TINY, "debug=fast_dev_run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mIoU" in result.stdout
