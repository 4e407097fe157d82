"""Diagnosis of COCO-format instance annotations: the mistakes torchvision and detectron2 users report most.

- boxes written as xyxy into COCO's xywh field, and boxes of zero or negative area, which give NaN box
  losses (pytorch/vision#997, #1994);
- category ids that ``categories`` does not list;
- masks that disagree with their boxes, which train fine and score AP 0.000 (detectron2#428);
- polygons of fewer than 3 points, annotations of images the file does not list;
- images listed but missing, or of another size than the json says; images without annotations.

Each finding names the file and examples, and says how to fix it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segtrain.data.checks import DataReport, Finding
from segtrain.data.datasets.coco_instances import (
    decode_mask,
    empty_mask,
    load_coco_json,
    looks_xyxy,
    short_polygon,
)

#: A mask and its box agree when the box around the mask covers this much of the annotated box (IoU).
BOX_AGREEMENT = 0.5


@dataclass
class InstanceReport:
    annotation_file: Path
    images: int = 0
    annotations: int = 0
    crowd: int = 0
    per_category: Counter = field(default_factory=Counter)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _examples(items: list, limit: int = 3) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xywh boxes."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(right - left, 0.0) * max(bottom - top, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def scan_instances(
    annotation_file: Path,
    image_dir: Path,
    check_images: bool = True,
    check_masks: bool = True,
    data: dict | None = None,
) -> InstanceReport:
    """Everything above, over one COCO-format json (``data``: the file already read). ``check_images``:
    also open every image listed; ``check_masks``: also decode every mask to compare it with its box.
    Without both it reads the json only, about a second for COCO's train split."""
    started = time.perf_counter()
    data = load_coco_json(annotation_file) if data is None else data
    report = InstanceReport(annotation_file, images=len(data["images"]), annotations=len(data["annotations"]))
    images = {image["id"]: image for image in data["images"]}
    categories = {category["id"]: category.get("name", "?") for category in data["categories"]}
    found: dict[str, list] = {
        key: [] for key in ("unknown", "orphan", "empty", "polygon", "flat", "xyxy", "disagree")
    }
    annotated = set()
    for annotation in data["annotations"]:
        ident = annotation.get("id")
        image = images.get(annotation.get("image_id"))
        if image is None:
            found["orphan"].append(ident)
            continue
        annotated.add(image["id"])
        if annotation.get("category_id") not in categories:
            found["unknown"].append((ident, annotation.get("category_id")))
        else:
            report.per_category[categories[annotation["category_id"]]] += 1
        report.crowd += bool(annotation.get("iscrowd", 0))
        segmentation = annotation.get("segmentation")
        if empty_mask(annotation):
            found["empty"].append(ident)
            continue
        if isinstance(segmentation, list) and any(short_polygon(polygon) for polygon in segmentation):
            found["polygon"].append(ident)
            continue
        x, y, w, h = (float(v) for v in annotation["bbox"])
        if w <= 0 or h <= 0:
            found["flat"].append((ident, annotation["bbox"]))
            continue
        width, height = image.get("width", 0), image.get("height", 0)
        if looks_xyxy(annotation["bbox"], width, height):
            found["xyxy"].append((ident, annotation["bbox"]))
            continue
        if check_masks and width and height:
            rle = mask_utils.encode(np.asfortranarray(decode_mask(segmentation, height, width)))
            around = [float(v) for v in mask_utils.toBbox(rle)]
            if _box_iou(around, [x, y, w, h]) < BOX_AGREEMENT:
                found["disagree"].append((ident, [round(v, 1) for v in annotation["bbox"]], around))
    name = annotation_file.name
    fixes = {
        "unknown": (
            "annotations (id, category_id) name categories that 'categories' does not list",
            "add those categories to 'categories', or remap the annotations to listed ids",
        ),
        "orphan": (
            "annotations name an image_id that 'images' does not list",
            "add the images to 'images', or drop those annotations",
        ),
        "empty": (
            "annotations have an empty mask (no segmentation, or area 0): the mask head would learn to "
            "predict nothing for them",
            "drop those annotations, or re-export their masks",
        ),
        "polygon": (
            "annotations hold polygons of fewer than 3 x,y points",
            "drop those polygons (or the annotations), or fix the exporter that wrote them",
        ),
        "flat": (
            "boxes (id, bbox) have zero or negative width or height; torchvision's box loss turns NaN on "
            "them (pytorch/vision#997, #1994), and segtrain leaves them out of training",
            "drop those annotations, or recompute each bbox from its mask",
        ),
        "xyxy": (
            "boxes (id, bbox) reach past their image as x, y, width, height: they look like x1, y1, x2, y2",
            "COCO's bbox is [x, y, width, height]: write [x1, y1, x2 - x1, y2 - y1]",
        ),
        "disagree": (
            f"masks lie away from their boxes (id, bbox, the box around the mask; IoU < {BOX_AGREEMENT}): "
            "training goes fine and AP comes out 0.000 (detectron2#428)",
            "recompute each bbox from its mask, or check that polygons and boxes use the same image size "
            "and x, y order",
        ),
    }
    for key, items in found.items():
        if items:
            problem, fix = fixes[key]
            report.errors.append(Finding(f"{name}: {len(items)} {problem}, e.g. {_examples(items)}", fix))
    if check_images:
        missing, resized = [], []
        for image in data["images"]:
            path = image_dir / image["file_name"]
            if not path.is_file():
                missing.append(str(path))
                continue
            with Image.open(path) as opened:
                if image.get("width") and (opened.width, opened.height) != (image["width"], image["height"]):
                    resized.append((image["file_name"], (image["width"], image["height"]), opened.size))
        if missing:
            report.errors.append(
                Finding(
                    f"{name}: {len(missing)} images listed are missing, e.g. {_examples(missing)}",
                    "restore them, point data.image_dir at them, or drop them from 'images'",
                )
            )
        if resized:
            report.errors.append(
                Finding(
                    f"{name}: {len(resized)} images differ in size from their json entry (file, json size, "
                    f"file size), e.g. {_examples(resized)}; their masks would not fit",
                    "re-export the images or fix 'width' and 'height' (EXIF-rotated photos are a common "
                    "cause)",
                )
            )
    empty = [image["file_name"] for image in data["images"] if image["id"] not in annotated]
    if empty:
        report.warnings.append(
            f"{len(empty)} of {len(images)} images have no annotations (e.g. {_examples(empty)}): they train "
            "the detector's background only; drop them from 'images' if that is not meant"
        )
    report.seconds = time.perf_counter() - started
    return report


def data_report(report: InstanceReport, name: str, split: str) -> DataReport:
    """check-data's report of a COCO-format split: the instances of each category."""
    header = (
        f"data={name} split={split}: {report.annotation_file}: {report.images} images, {report.annotations} "
        f"annotations ({report.crowd} crowd regions) scanned in {report.seconds:.2f} s"
    )
    table = [f"{'category':<24} {'instances':>9}"]
    table += [f"{category[:24]:<24} {count:>9}" for category, count in sorted(report.per_category.items())]
    return DataReport(header, table, report.errors, report.warnings, scan=report)
