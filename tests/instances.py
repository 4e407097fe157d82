"""Tiny instance datasets built on the fly: drawn shapes, their label images, and the COCO json that
``segtrain.data.labels_to_coco`` writes from them (the converter users run on their own label images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segtrain.data.labels_to_coco import convert

#: Label value -> category name of the drawn shapes.
SHAPES = {1: "disc", 2: "square"}


def write_coco_json(path: Path, categories: dict[int, str], images=(), annotations=()) -> dict:
    data = {
        "images": list(images),
        "annotations": list(annotations),
        "categories": [{"id": i, "name": name} for i, name in categories.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def draw_shapes(rng: np.random.Generator, height: int, width: int, count: int) -> tuple[np.ndarray, ...]:
    """An RGB image of ``count`` bright discs and squares on noise, and its label image (0 background)."""
    image = Image.fromarray(rng.integers(0, 60, (height, width, 3), dtype=np.uint8))
    label = Image.new("L", (width, height), 0)
    paint, mark = ImageDraw.Draw(image), ImageDraw.Draw(label)
    for _ in range(count):
        value = int(rng.integers(1, 3))
        radius = int(rng.integers(6, max(7, min(height, width) // 5)))
        cx, cy = int(rng.integers(radius, width - radius)), int(rng.integers(radius, height - radius))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        color = (230, 60, 60) if value == 1 else (60, 200, 230)
        (paint.ellipse if value == 1 else paint.rectangle)(box, fill=color)
        (mark.ellipse if value == 1 else mark.rectangle)(box, fill=value)
    return np.asarray(image), np.asarray(label)


def make_shapes_instances(
    root: Path, splits: dict[str, int] | None = None, size: tuple[int, int] = (64, 80), seed: int = 0
) -> Path:
    """``root/images/{split}/*.png``, ``root/labels/{split}`` and ``root/annotations/{split}.json``, the
    layout data=instances_folder reads by default."""
    rng = np.random.default_rng(seed)
    for split, count in (splits or {"train": 16, "val": 6}).items():
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, label = draw_shapes(rng, *size, count=int(rng.integers(1, 4)))
            Image.fromarray(image).save(images / f"{split}_{index:03d}.png")
            Image.fromarray(label).save(labels / f"{split}_{index:03d}.png")
        convert(images, labels, SHAPES, root / "annotations" / f"{split}.json", min_area=20)
    return root


#: A Mask R-CNN small enough for CPU tests: ResNet-18 trunk, 32-channel FPN, 128 px.
TINY_DETECTOR = [
    "model.backbone.name=resnet18",
    "model.backbone.pretrained=false",
    "model.backbone.trainable_layers=5",
    "model.fpn_channels=32",
    "model.representation_size=64",
    "model.mask_channels=32",
    "model.min_size=64",
    "model.max_size=96",
    "model.box_batch_size_per_image=64",
    "model.anchor_sizes=[8,16,32,64,128]",
]
