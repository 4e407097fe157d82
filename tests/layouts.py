"""Tiny dataset trees in each published layout, written on the fly by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _image(rng, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def _blocks(rng, h: int, w: int, values, block: int = 8) -> np.ndarray:
    """A mask of constant blocks, each a random choice of ``values``."""
    coarse = rng.choice(np.asarray(values, np.uint8), size=(-(-h // block), -(-w // block)))
    return np.kron(coarse, np.ones((block, block), np.uint8))[:h, :w]


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_cityscapes_tree(root: Path, per_split: int = 2, size=(32, 64), seed: int = 0) -> Path:
    """Each label id has its own colour in the image, so a model can learn some classes in seconds."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 255, size=(34, 3))
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for frame in range(per_split):
            stem = f"{city}_000000_{frame:06d}"
            ids = _blocks(rng, *size, range(34))
            image = (colors[ids] + rng.normal(0, 20, size=(*size, 3))).clip(0, 255).astype(np.uint8)
            save(image, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            save(ids, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


def _images_annotations_tree(root: Path, splits, stem, values, per_split: int, size, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for index in range(per_split):
            save(_image(rng, *size), root / "images" / split / f"{stem(split, index)}.jpg")
            save(_blocks(rng, *size, values), root / "annotations" / split / f"{stem(split, index)}.png")
    return root


def make_ade20k_tree(root: Path, per_split: int = 2, size=(40, 48), seed: int = 0) -> Path:
    return _images_annotations_tree(
        root,
        ("training", "validation"),
        lambda split, i: f"ADE_{split[:5]}_{i:08d}",
        range(151),
        per_split,
        size,
        seed,
    )


def make_camvid_tree(root: Path, per_split: int = 2, size=(36, 48), seed: int = 0) -> Path:
    """SegNet's CamVid/ with lists holding the authors' absolute paths."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        lines = []
        for index in range(per_split):
            name = f"0001TP_{index:06d}.png"
            save(_image(rng, *size), root / split / name)
            save(_blocks(rng, *size, range(12)), root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_coco_stuff_tree(root: Path, per_split: int = 2, size=(40, 40), seed: int = 0) -> Path:
    return _images_annotations_tree(
        root,
        ("train2017", "val2017"),
        lambda split, i: f"{i + 9:012d}",
        [0, 11, 91, 181, 255],
        per_split,
        size,
        seed,
    )


def make_folder_tree(
    root: Path,
    count: int = 10,
    size=(32, 32),
    values=(0, 255),
    seed: int = 0,
    images_dir: str = "images",
    masks_dir: str = "masks",
    gray: bool = False,
) -> Path:
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = _image(rng, *size)
        save(image[..., 0] if gray else image, root / images_dir / f"img_{index:03d}.png")
        save(_blocks(rng, *size, values), root / masks_dir / f"img_{index:03d}.png")
    return root


def make_decathlon_tree(
    root: Path, cases: int = 5, shape=(20, 16, 12), modality: str = "CT", seed: int = 0
) -> Path:
    """An MSD task: NIfTI volumes (x, y, z) with a labelled box, and dataset.json."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    training = []
    for index in range(cases):
        volume = rng.normal(40, 300, size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[4:12, 3:10, 2:8] = 1
        volume[label == 1] += 500
        for folder, data in (("imagesTr", volume), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / folder / f"case_{index:03d}.nii.gz"))
        training.append(
            {"image": f"./imagesTr/case_{index:03d}.nii.gz", "label": f"./labelsTr/case_{index:03d}.nii.gz"}
        )
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Tiny",
                "modality": {"0": modality},
                "labels": {"0": "background", "1": "organ"},
                "numTraining": cases,
                "training": training,
                "test": [],
            }
        )
    )
    return root
