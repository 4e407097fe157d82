"""Label images to COCO instances json: one instance per connected region of chosen label values.

For data whose annotations are label images (semantic masks) but whose task is instances: ISBI 2012's
cells (each region of cell interior enclosed by membrane), CamVid's cars and pedestrians. Masks are
written as RLE (exact, holes kept); boxes and areas are the masks' own. ``scripts/labels_to_coco.py`` is
the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from segtrain.data.io import list_images, read_mask
from segtrain.errors import SegtrainError


def region_instances(label: np.ndarray, value: int, min_area: int, connectivity: int) -> list[np.ndarray]:
    """Binary masks of the connected regions of ``value`` (4- or 8-connected) of ``min_area`` pixels or
    more."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    regions, count = ndimage.label(label == value, structure=structure)
    if not count:
        return []
    areas = np.bincount(regions.ravel(), minlength=count + 1)
    return [regions == index for index in range(1, count + 1) if areas[index] >= min_area]


def convert(
    images: Path,
    labels: Path,
    categories: Mapping[int, str],
    output: Path,
    min_area: int = 10,
    connectivity: int = 4,
) -> dict:
    """Writes ``output`` (COCO instances json) for the image / label pairs with equal stems; the images'
    ``file_name`` are relative to ``images``. ``categories``: label value -> category name; the category
    ids are 1, 2, ... in the order given."""
    if connectivity not in (4, 8):
        raise SegtrainError(f"--connectivity {connectivity} must be 4 or 8")
    label_files = {path.stem: path for path in list_images(labels)}
    image_files = [path for path in list_images(images) if path.stem in label_files]
    if not image_files:
        raise SegtrainError(f"no image in {images} has a label image of the same name in {labels}")
    category_of = {value: index + 1 for index, value in enumerate(categories)}
    data = {
        "info": {"description": f"instances of {dict(categories)} converted from {labels} by segtrain"},
        "images": [],
        "annotations": [],
        "categories": [{"id": category_of[value], "name": name} for value, name in categories.items()],
    }
    for image_id, path in enumerate(sorted(image_files), start=1):
        label = read_mask(label_files[path.stem])
        height, width = label.shape
        data["images"].append(
            {"id": image_id, "file_name": str(path.relative_to(images)), "height": height, "width": width}
        )
        for value in categories:
            for region in region_instances(label, value, min_area, connectivity):
                rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
                data["annotations"].append(
                    {
                        "id": len(data["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": category_of[value],
                        "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                        "area": float(mask_utils.area(rle)),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "iscrowd": 0,
                    }
                )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data))
    return data
