"""``scripts/gpu_check.sh``, the GPU issue's one prepared run, checked on CPU before any device time is spent
on it: in ``dry`` mode every GPU command line is composed and validated by segtrain (``--cfg job``) and the
data steps run, so a mistyped key or a broken step fails here rather than on the GPU."""

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.conftest import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    "environment",
    "compile_gap",
    "bench_channels_last",
    "camvid_jpeg",
    "camvid_train",
    "eval_whole",
    "eval_slide",
    "eval_flip",
    "camvid_instances",
    "mask_rcnn",
    "ddp_train",
    "ddp_resume",
    "bench_eager",
    "bench_compiled",
    "bench_compiled_static",
]


def camvid_tree(root: Path) -> Path:
    """CamVid's published layout: two 48x64 images per split, a car (8) and a pedestrian (9) in each mask."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(2):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            mask = np.full((48, 64), 3, dtype=np.uint8)
            mask[10:20, 10:30], mask[30:44, 40:50] = 8, 9
            Image.fromarray(image).save(root / split / f"{split}_{index}.png")
            Image.fromarray(mask).save(root / f"{split}annot" / f"{split}_{index}.png")
    return root


def test_every_gpu_step_composes_and_one_failing_step_costs_no_other(tmp_path):
    # A python that fails the sliding-window eval as a crash on the GPU would, and runs every other step.
    python = tmp_path / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        '[[ " $* " == *" inference.mode=slide "* ]] && { echo "injected failure" >&2; exit 3; }\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    out, archive = tmp_path / "out", tmp_path / "gpu_check.tgz"
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "PYTHON": str(python),
        "CAMVID": str(camvid_tree(tmp_path / "camvid")),
        "ARCHIVE": str(archive),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "dry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in rows] == STEPS
    exits = {name: code for name, code, _ in rows}
    assert exits.pop("eval_slide") == "3"
    failed = [name for name, code in exits.items() if code != "0"]
    assert not failed, {name: (out / name / "stderr.txt").read_text()[-2000:] for name in failed}

    # Each step composed what it names, on the GPU's settings.
    def config(name: str) -> dict:
        return yaml.safe_load((out / name / "stdout.txt").read_text())

    gap = config("compile_gap")
    assert gap["trainer"]["accelerator"] == "gpu" and gap["trainer"]["precision"] == "bf16-mixed"
    assert gap["runtime"]["compile"]["enable"] and gap["runtime"]["channels_last"]
    assert gap["bench"]["profile"] == 3 and gap["model"]["backbone"]["name"] == "resnet101"
    assert config("bench_compiled")["bench"]["compile_reference"]
    assert config("bench_compiled_static")["runtime"]["compile"]["dynamic"] is False
    assert config("ddp_resume")["trainer"]["strategy"] == "ddp" and config("ddp_resume")["resume"]
    assert config("mask_rcnn")["task"]["name"] == "instance"
    assert "injected failure" in (out / "eval_slide" / "stderr.txt").read_text()
    # The data steps ran: JPEGs, and the cars and pedestrians as COCO instances for Mask R-CNN.
    assert len(list((out / "camvid_jpeg" / "images" / "train").glob("*.jpg"))) == 2
    assert "2 images, 4 instances" in (out / "camvid_instances" / "stdout.txt").read_text()
    with tarfile.open(archive) as packed:
        names = packed.getnames()
    assert "./steps.tsv" in names and not any("camvid_jpeg" in name for name in names)

    # STEPS: a later session runs only what the budget cut off.
    chosen = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "again"), "dry"],
        env={**env, "STEPS": "mask_rcnn,ddp_resume", "CAMVID_JPEG": str(out / "camvid_jpeg")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "again" / "steps.tsv").read_text().splitlines()[1:]]
    assert [(name, code) for name, code, _ in rows] == [("mask_rcnn", "0"), ("ddp_resume", "0")]
