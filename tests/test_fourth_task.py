"""The task contract holds: a fourth task, binary foreground segmentation with its own metric, lives in one
package with one YAML outside segtrain (tests/foreground_task) and trains, evaluates, predicts and exports
through segtrain's commands, unchanged. The commands find it through ``hydra.searchpath``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segtrain.cli import main

PACKAGE = Path(__file__).parent / "foreground_task"
SEARCH_PATH = f"hydra.searchpath=[file://{PACKAGE / 'conf'}]"
TINY = [
    "model.base_channels=4",
    "model.depth=2",
    "data.dataset.lengths.train=32",
    "data.dataset.lengths.val=16",
    "data.dataset.lengths.test=16",
    "data.dataset.image_size=32",
    "trainer.max_epochs=2",
    "optimizer.lr=0.01",
]


def foreground_iou_by_hand(ckpt: Path) -> float:
    """The foreground IoU of the checkpoint's U-Net on the test split, from the dataset's raw arrays:
    normalised as (x / 255 - 0.5) / 0.25, foreground where softmax's class 1 is above 0.5, against every
    non-background shape of the raw masks (the task's label_map, written out)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segtrain.data.datasets.shapes import Shapes

    stored = torch.load(ckpt, weights_only=True, map_location="cpu")
    network = instantiate(OmegaConf.create(stored["segtrain"]["resolved_config"]).model).eval()
    network.load_state_dict({k.removeprefix("model."): v for k, v in stored["state_dict"].items()})
    dataset = Shapes("test", lengths={"test": 16}, image_size=32)
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        predicted = network((images / 255 - 0.5) / 0.25).softmax(1)[:, 1] > 0.5
    truth = torch.from_numpy(dataset.masks) > 0
    return float((predicted & truth).sum() / (predicted | truth).sum())


@pytest.mark.slow
def test_a_fourth_task_from_one_package_and_one_yaml_runs_through_every_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["task=foreground", SEARCH_PATH, *TINY, "hydra.run.dir=run"])
    trained = json.loads(Path("run/val_metrics.json").read_text())
    assert trained["monitor"] == "val/foreground_IoU" and 0 < trained["best_val_foreground_IoU"] <= 1
    ckpt = tmp_path / "run/checkpoints/last.ckpt"

    # No task= here: eval composes the checkpoint's task, and its inference settings (inference.threshold).
    main(["eval", SEARCH_PATH, f"ckpt={ckpt}", "data.split=test", "hydra.run.dir=eval"])
    scored = json.loads(Path("eval/metrics.json").read_text())
    assert scored["foreground_IoU"] == pytest.approx(foreground_iou_by_hand(ckpt), abs=1e-9)
    assert scored["inference"]["threshold"] == 0.5 and Path("eval/foreground.json").is_file()

    main(["export", SEARCH_PATH, f"ckpt={ckpt}", f"output={tmp_path / 'model.onnx'}", "hydra.run.dir=export"])
    assert json.loads(Path("model.onnx.json").read_text())["task"] == "foreground"

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(images / f"{index}.png")
    masks = {}
    for source in (ckpt, tmp_path / "model.onnx"):
        out = tmp_path / f"predicted_{source.suffix[1:]}"
        run_dir = f"hydra.run.dir=predict_{source.suffix[1:]}"
        main(["predict", SEARCH_PATH, f"ckpt={source}", f"input={images}", f"output={out}", run_dir])
        masks[source.suffix] = [np.asarray(Image.open(out / f"{index}.png")) for index in range(2)]
    for from_checkpoint, from_export in zip(masks[".ckpt"], masks[".onnx"]):
        assert from_checkpoint.shape == (32, 40) and set(np.unique(from_checkpoint)) <= {0, 255}
        assert (from_checkpoint != from_export).mean() < 1e-3


def test_a_checkpoint_of_a_task_whose_yaml_is_not_on_the_search_path_is_named(tmp_path, monkeypatch, capsys):
    """Without hydra.searchpath the commands cannot find the checkpoint's task: one error says how."""
    ckpt = tmp_path / "foreground.ckpt"
    torch.save({"segtrain": {"task": "foreground"}, "state_dict": {}}, ckpt)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["eval", f"ckpt={ckpt}"])
    assert exited.value.code != 0
    message = capsys.readouterr().err
    assert "was trained with task=foreground" in message and "hydra.searchpath" in message
