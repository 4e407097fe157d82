"""Shared fixtures: an offline environment, a CLI runner, tiny datasets built on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "WANDB_SILENT": "true",
    "OMP_NUM_THREADS": "1",
}
os.environ.update(OFFLINE_ENV)

#: A run that finishes in seconds: 32 px shapes, a 4-channel U-Net, one epoch.
TINY = [
    "data.dataset.lengths={train:32,val:8,test:8}",
    "data.dataset.image_size=32",
    "data.batch_size=8",
    "data.val_batch_size=8",
    "model.base_channels=4",
    "model.depth=2",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer.num_sanity_val_steps=0",
]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_cli(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    timeout: int = 300,
    preexec_fn=None,
    interpreter_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``segtrain ARGS`` in a fresh interpreter, as a user runs it (``preexec_fn``: limits set on it;
    ``interpreter_flags``: options of python itself, such as ``-X importtime``)."""
    return subprocess.run(
        [sys.executable, *interpreter_flags, "-m", "segtrain", *args],
        cwd=cwd,
        env={**os.environ, **OFFLINE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def checkpoints(run_root: Path, name: str = "last.ckpt") -> list[Path]:
    return sorted(run_root.rglob(f"checkpoints/{name}"))


VOC_PALETTE = [
    [0, 0, 0],
    [128, 0, 0],
    [0, 128, 0],
    [128, 128, 0],
    [0, 0, 128],
    [128, 0, 128],
    [0, 128, 128],
    [128, 128, 128],
    [64, 0, 0],
    [192, 0, 0],
    [64, 128, 0],
    [192, 128, 0],
    [64, 0, 128],
    [192, 0, 128],
    [64, 128, 128],
    [192, 128, 128],
    [0, 64, 0],
    [128, 64, 0],
    [0, 192, 0],
    [128, 192, 0],
    [0, 64, 128],
]


def save_palette_mask(mask: np.ndarray, path: Path) -> None:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = [c for color in VOC_PALETTE for c in color]
    image.putpalette(flat + [224, 224, 192] * (256 - len(VOC_PALETTE)))
    image.save(path)


def make_voc_tree(root: Path, train: int = 6, val: int = 4, aug: bool = False, seed: int = 0) -> Path:
    """A VOC2012 tree in the published layout: JPEGs, palette PNG masks with 255 borders, lists."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = {"train": [f"2007_{i:06d}" for i in range(train)], "val": [f"2008_{i:06d}" for i in range(val)]}
    for split, split_names in names.items():
        for name in split_names:
            h, w = rng.integers(40, 72, size=2)
            image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            label = int(rng.integers(1, 21))
            mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = label
            mask[h // 4, :] = 255  # VOC marks object borders as "void"
            image[mask == label] = np.array(VOC_PALETTE[label], np.uint8)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
            save_palette_mask(mask, voc / "SegmentationClass" / f"{name}.png")
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    if aug:
        (voc / "SegmentationClassAug").mkdir(exist_ok=True)
        for name in names["train"]:
            mask = np.asarray(Image.open(voc / "SegmentationClass" / f"{name}.png"))
            Image.fromarray(mask, mode="L").save(voc / "SegmentationClassAug" / f"{name}.png")
        (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(names["train"]) + "\n")
    return voc


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc_tree(tmp_path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """One tiny training run shared by the eval / predict / export tests."""
    cwd = tmp_path_factory.mktemp("trained")
    result = run_cli("train", *TINY, "trainer.max_epochs=2", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = checkpoints(cwd / "outputs", "best.ckpt")
    return {"cwd": cwd, "best": best, "last": best.with_name("last.ckpt"), "stdout": result.stdout}


#: The files holding the longest end-to-end runs (minutes each). The workers take whole files
#: (``--dist loadfile``) in collection order, so these go first: a long file that starts last keeps the
#: run going while the other worker sits idle.
LONGEST_FILES = ("test_referring.py", "test_slurm.py", "test_scale_out.py")


def pytest_collection_modifyitems(items: list) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)
