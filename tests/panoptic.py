"""A small panoptic tree in the COCO panoptic format (or Cityscapes' createPanopticImgs layout): sky and
ground as stuff, discs and squares as things, drawn so that a tiny model can learn them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.data.datasets.coco_panoptic import id_to_rgb

#: (name, json id, is a thing)
CATEGORIES = [("sky", 3, False), ("ground", 5, False), ("disc", 11, True), ("square", 12, True)]
COLOURS = {3: (70, 130, 180), 5: (90, 160, 60), 11: (220, 30, 40), 12: (240, 220, 30)}


def draw_scene(generator: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list]:
    """(RGB image, segment ids, segments_info) of one scene."""
    height, width = size
    ids = np.zeros(size, np.int32)
    horizon = int(generator.integers(height // 3, 2 * height // 3))
    ids[:horizon], ids[horizon:] = 1, 2
    segments = [{"id": 1, "category_id": 3, "iscrowd": 0}, {"id": 2, "category_id": 5, "iscrowd": 0}]
    rows, columns = np.mgrid[:height, :width]
    for segment_id in range(3, 3 + int(generator.integers(1, 4))):
        category = int(generator.choice([11, 12]))
        radius = int(generator.integers(4, 9))
        y, x = (
            int(generator.integers(radius, height - radius)),
            int(generator.integers(radius, width - radius)),
        )
        if category == 11:
            region = (rows - y) ** 2 + (columns - x) ** 2 <= radius**2
        else:
            region = (abs(rows - y) <= radius) & (abs(columns - x) <= radius)
        ids[region] = segment_id
        segments.append({"id": segment_id, "category_id": category, "iscrowd": 0})
    ids[: height // 10, : width // 10] = 0  # an unlabelled corner
    segments = [s for s in segments if (ids == s["id"]).any()]
    image = np.zeros((*size, 3), np.uint8)
    for segment in segments:
        image[ids == segment["id"]] = COLOURS[segment["category_id"]]
    noise = generator.integers(-20, 21, image.shape)
    image = np.clip(image.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    for segment in segments:
        region = ids == segment["id"]
        rows_in, columns_in = np.nonzero(region)
        x0, y0 = int(columns_in.min()), int(rows_in.min())
        segment["area"] = int(region.sum())
        segment["bbox"] = [x0, y0, int(columns_in.max()) - x0 + 1, int(rows_in.max()) - y0 + 1]
    return image, ids, segments


def make_panoptic_tree(
    root: Path, counts: dict[str, int], size=(64, 80), layout: str = "coco", seed: int = 0
) -> Path:
    """COCO: annotations/panoptic_{split}2017.json and folder, {split}2017/*.jpg... as PNGs named .jpg's
    stem; Cityscapes: gtFine/cityscapes_panoptic_{split}.json and folder, leftImg8bit/{split}/{city}/."""
    generator = np.random.default_rng(seed)
    categories = [
        {"id": i, "name": n, "isthing": int(t), "color": list(COLOURS[i])} for n, i, t in CATEGORIES
    ]
    for split, count in counts.items():
        if layout == "coco":
            json_path = root / "annotations" / f"panoptic_{split}2017.json"
            segment_dir = root / "annotations" / f"panoptic_{split}2017"
        else:
            json_path = root / "gtFine" / f"cityscapes_panoptic_{split}.json"
            segment_dir = root / "gtFine" / f"cityscapes_panoptic_{split}"
        segment_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, ids, segments = draw_scene(generator, size)
            if layout == "coco":
                stem = f"{index:012d}"
                image_name, image_path = f"{stem}.png", root / f"{split}2017" / f"{stem}.png"
                png_name, image_id = f"{stem}.png", index + 1
            else:
                stem = f"town_{index:06d}_000019"
                image_name = f"{stem}_leftImg8bit.png"
                image_path = root / "leftImg8bit" / split / "town" / image_name
                png_name, image_id = f"{stem}_gtFine_panoptic.png", stem
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_path)
            Image.fromarray(id_to_rgb(ids)).save(segment_dir / png_name)
            images.append({"id": image_id, "file_name": image_name, "height": size[0], "width": size[1]})
            annotations.append({"image_id": image_id, "file_name": png_name, "segments_info": segments})
        json_path.write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    return root
