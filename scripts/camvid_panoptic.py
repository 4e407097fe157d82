"""A small real panoptic set from CamVid (benchmarks/panoptic.md): cars, pedestrians and bicyclists are
things, each connected region of one an instance (CamVid has no instance ids); the other 8 classes are
stuff; void (11) stays unlabelled. Written in the COCO panoptic format that data=coco_panoptic reads.

    python scripts/camvid_panoptic.py --camvid ../shared/data/camvid --output /tmp/camvid_panoptic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segtrain.data.datasets.coco_panoptic import id_to_rgb

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
           "bicyclist"]  # fmt: skip
THINGS = {"car", "pedestrian", "bicyclist"}
#: Thing regions smaller than this (pixels) are specks of a class map, not objects: left unlabelled.
MIN_THING_AREA = 64


def convert(mask: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    ids = np.zeros(mask.shape, np.int32)
    segments = []
    for class_id, name in enumerate(CLASSES):
        region = mask == class_id
        if not region.any():
            continue
        parts, count = ndimage.label(region) if name in THINGS else (region.astype(np.int32), 1)
        for part in range(1, count + 1):
            pixels = parts == part
            if name in THINGS and pixels.sum() < MIN_THING_AREA:
                continue
            segment = len(segments) + 1
            ids[pixels] = segment
            rows, columns = np.nonzero(pixels)
            x, y = int(columns.min()), int(rows.min())
            segments.append({
                "id": segment, "category_id": class_id + 1, "iscrowd": 0, "area": int(pixels.sum()),
                "bbox": [x, y, int(columns.max()) - x + 1, int(rows.max()) - y + 1],
            })  # fmt: skip
    return ids, segments


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--camvid", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args()
    categories = [{"id": i + 1, "name": n, "isthing": int(n in THINGS)} for i, n in enumerate(CLASSES)]
    for split in args.splits:
        images_dir = args.output / f"{split}2017"
        segment_dir = args.output / "annotations" / f"panoptic_{split}2017"
        images_dir.mkdir(parents=True, exist_ok=True)
        segment_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index, path in enumerate(sorted((args.camvid / split).glob("*.png")), start=1):
            mask = np.asarray(Image.open(args.camvid / f"{split}annot" / path.name))
            ids, segments = convert(mask)
            (images_dir / path.name).write_bytes(path.read_bytes())
            Image.fromarray(id_to_rgb(ids)).save(segment_dir / path.name)
            images.append(
                {"id": index, "file_name": path.name, "height": mask.shape[0], "width": mask.shape[1]}
            )
            annotations.append({"image_id": index, "file_name": path.name, "segments_info": segments})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (args.output / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(data))
        print(f"{split}: {len(images)} images, {sum(len(a['segments_info']) for a in annotations)} segments")


if __name__ == "__main__":
    main()
