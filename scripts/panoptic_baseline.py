"""A trivial panoptic baseline (benchmarks/panoptic.md): every validation image gets the train split's most
frequent class at each pixel position (images of one size, as CamVid's), stuff classes only, no things;
scored by PQ as eval scores a model.

    python scripts/panoptic_baseline.py --root /tmp/camvid_panoptic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from segtrain.data.datasets.coco_panoptic import rgb_to_id
from segtrain.tasks.panoptic.quality import PanopticQuality


def load(root: Path, split: str):
    data = json.loads((root / "annotations" / f"panoptic_{split}2017.json").read_text())
    folder = root / "annotations" / f"panoptic_{split}2017"
    for annotation in data["annotations"]:
        yield (
            rgb_to_id(np.asarray(Image.open(folder / annotation["file_name"]))),
            annotation["segments_info"],
            data,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    counts = None
    for ids, segments, data in load(args.root, "train"):
        categories = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
        classes = np.zeros(ids.shape, np.int64)
        for segment in segments:
            classes[ids == segment["id"]] = segment["category_id"]
        if counts is None:
            counts = np.zeros((max(categories) + 1, *ids.shape), np.int32)
        np.put_along_axis(counts, classes[None], np.take_along_axis(counts, classes[None], 0) + 1, 0)
    stuff = [c for c, thing in categories.items() if not thing]
    counts[[c for c in range(len(counts)) if c not in stuff]] = -1
    majority = counts.argmax(0)
    prediction_segments = [{"id": c, "category_id": c} for c in np.unique(majority).tolist()]
    quality = PanopticQuality(categories)
    images = 0
    for ids, segments, _ in load(args.root, "val"):
        quality.update(ids, segments, majority, prediction_segments)
        images += 1
    result = quality.compute()
    print(
        json.dumps({key: round(result[key], 4) for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st")}),
        images,
        "images",
    )


if __name__ == "__main__":
    main()
