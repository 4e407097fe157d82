"""CPU benchmark of instance segmentation on ISBI 2012's cells: a small Mask R-CNN against a trivial baseline.

    python scripts/bench_instances_isbi.py [--root ../shared/data/isbi2012-membranes] [--work DIR]
        [--epochs 24] [overrides ...]

1. scripts/labels_to_coco.py's converter turns the label images into COCO instances (each 4-connected
   region of cell interior enclosed by membrane is a cell, 10 px or more); images 0-23 train, 24-29 val.
2. ``segtrain task=instance model=mask_rcnn`` trains a ResNet-18-FPN Mask R-CNN at 1/4 of the paper's
   head widths from scratch (no ImageNet weights offline) at 256 px, and ``segtrain eval`` writes its
   detections, scored here with COCOeval.
3. The baseline: the image smoothed (Gaussian, sigma 2), thresholded by Otsu's method, and each
   4-connected bright region of 10 px or more one instance of score 1: what a user gets without learning.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from segtrain.data.labels_to_coco import convert, region_instances

ROOT = Path(__file__).resolve().parents[1]
VAL_IMAGES = 6


def split(data: dict, work: Path) -> None:
    """The converter's json, cut into train (all but the last ``VAL_IMAGES`` by name) and val."""
    images = sorted(data["images"], key=lambda image: int(Path(image["file_name"]).stem))
    for name, part in (("train", images[:-VAL_IMAGES]), ("val", images[-VAL_IMAGES:])):
        ids = {image["id"] for image in part}
        subset = {
            **data,
            "images": part,
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        }
        (work / "annotations" / f"{name}.json").write_text(json.dumps(subset))


def otsu(values: np.ndarray) -> float:
    histogram, edges = np.histogram(values, bins=256)
    weights = np.cumsum(histogram)
    means = np.cumsum(histogram * edges[:-1])
    between = (means[-1] * weights - means * weights[-1]) ** 2 / np.maximum(
        weights * (weights[-1] - weights), 1
    )
    return float(edges[np.argmax(between)])


def baseline(images: Path, truth: dict) -> list[dict]:
    results = []
    for image in truth["images"]:
        pixels = np.asarray(Image.open(images / image["file_name"]).convert("L"), np.float32)
        smooth = ndimage.gaussian_filter(pixels, 2)
        foreground = (smooth > otsu(smooth)).astype(np.uint8)
        for region in region_instances(foreground, 1, min_area=10, connectivity=4):
            rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "score": 1.0,
                }
            )
    return results


def mask_ap(truth_path: Path, results: list[dict]) -> tuple[float, float, float]:
    """COCO mask AP, AP50 and AP75 with up to 300 detections per image (~110 cells per image: COCO's
    100 would cap recall)."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(truth_path))
        evaluation = COCOeval(truth, truth.loadRes(results), "segm")
        evaluation.params.maxDets = [1, 10, 300]
        evaluation.evaluate()
        evaluation.accumulate()
    # precision[iou threshold 0.5:0.95, recall, class, area "all", max detections 300]
    precision = evaluation.eval["precision"][:, :, 0, 0, 2]

    def mean(values: np.ndarray) -> float:
        return float(values[values > -1].mean())

    return mean(precision), mean(precision[0]), mean(precision[5])


def segtrain(*args: str, cwd: Path) -> str:
    command = [sys.executable, "-m", "segtrain", *args]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "isbi2012-membranes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segtrain-bench-isbi-instances"))
    parser.add_argument("--epochs", type=int, default=24)
    args, overrides = parser.parse_known_args()
    work = args.work.resolve()
    (work / "annotations").mkdir(parents=True, exist_ok=True)
    data = convert(args.root / "image", args.root / "label", {255: "cell"}, work / "all.json", 10, 4)
    split(data, work)
    truth_path = work / "annotations" / "val.json"
    truth = json.loads(truth_path.read_text())
    print(
        f"{len(data['annotations'])} cells in 30 images; val: {len(truth['annotations'])} cells in 6 images"
    )

    base = mask_ap(truth_path, baseline(args.root / "image", truth))
    print(f"baseline (Otsu + connected regions): mask AP {base[0]:.4f} AP50 {base[1]:.4f} AP75 {base[2]:.4f}")

    run = [
        "task=instance",
        "data=instances_folder",
        f"data.root={work}",
        f"data.image_dir={args.root / 'image'}",
        "data.in_channels=3",
        "data.batch_size=4",
        "model.backbone.name=resnet18",
        "model.backbone.pretrained=false",
        "model.backbone.trainable_layers=5",
        "model.min_size=256",
        "model.max_size=256",
        "model.fpn_channels=64",
        "model.representation_size=256",
        "model.mask_channels=64",
        "model.box_batch_size_per_image=256",
        "model.anchor_sizes=[8,16,32,64,128]",
        "model.box_detections_per_img=300",
        "data.train_transforms=[{_target_: albumentations.HorizontalFlip},"
        "{_target_: albumentations.VerticalFlip}]",
        "optimizer.lr=0.0005",
        f"trainer.max_epochs={args.epochs}",
        "trainer.check_val_every_n_epoch=4",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={work}/run",
        *overrides,
    ]
    started = time.perf_counter()
    segtrain(*run, cwd=work)
    trained_s = time.perf_counter() - started
    ckpt = work / "run" / "checkpoints" / "best.ckpt"
    segtrain("eval", f"ckpt={ckpt}", "save_predictions=true", f"hydra.run.dir={work}/eval", cwd=work)
    detections = json.loads((work / "eval" / "predictions" / "detections.json").read_text())
    model = mask_ap(truth_path, detections)
    print(
        f"Mask R-CNN R18-FPN, {args.epochs} epochs in {trained_s:.0f} s: mask AP {model[0]:.4f} AP50 "
        f"{model[1]:.4f} AP75 {model[2]:.4f} ({len(detections)} detections)"
    )


if __name__ == "__main__":
    main()
