"""What the dense CRF does to a trained model: mIoU and boundary (trimap) accuracy, with and without.

    .venv/bin/python scripts/bench_crf.py CKPT [--root ../shared/data/camvid] [--split val] [--band 3 5 10]

Runs the checkpoint over the split as `segtrain eval` does (its stored data config and inference
settings), once plainly and once with `inference.crf=true` (DeepLab-LargeFOV's CRF parameters), and
reports val mIoU and, as in DeepLab (Chen et al. 2015, Fig. 5), the pixel accuracy inside a band of
``band`` pixels around the ground-truth object boundaries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from segtrain.data.datamodule import build_datamodule
from segtrain.metrics import ConfusionMatrix, scores
from segtrain.runtime.checkpoint import load_checkpoint
from segtrain.tasks import build_task

REPO = Path(__file__).resolve().parents[1]


def boundary_band(mask: torch.Tensor, width: int, ignore_index: int) -> torch.Tensor:
    """Pixels within ``width`` of a label change in ``mask`` [H, W], ignored pixels excluded."""
    labels = mask.float()[None, None]
    high = F.max_pool2d(labels, 3, 1, 1)
    low = -F.max_pool2d(-labels, 3, 1, 1)
    edges = (high != low).float()
    band = F.max_pool2d(edges, 2 * width + 1, 1, width)[0, 0] > 0
    return band & (mask != ignore_index)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--band", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument(
        "--crf",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="CRF parameters to change, e.g. theta_alpha=30 (default: DeepLab-LargeFOV's)",
    )
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.ckpt)
    cfg = OmegaConf.create(checkpoint["segtrain"]["config"])
    cfg.data.root, cfg.data.num_workers, cfg.data.val_batch_size = args.root, 0, 1
    task = build_task(cfg)
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    datamodule = build_datamodule(cfg.data)
    dataset = datamodule.build("val" if args.split == cfg.data.val_split else "eval")
    classes, ignore = task.classes, task.ignore_index
    params = dict(task.inference.get("crf_params") or {})
    params.update({key: float(value) for key, value in (item.split("=", 1) for item in args.crf)})
    params["iterations"] = int(params.get("iterations", 10))
    task.inference["crf_params"] = params
    results = {}
    for crf in (False, True):
        task.inference["crf"] = crf
        confmat = ConfusionMatrix(len(classes), ignore)
        hits = {width: [0, 0] for width in args.band}
        start = time.perf_counter()
        with torch.inference_mode():
            for index in range(len(dataset)):
                item = dataset[index]
                pred = task.predict_probs(item["image"][None]).argmax(1)[0]
                confmat.update(pred[None], item["mask"][None])
                for width in args.band:
                    band = boundary_band(item["mask"], width, ignore)
                    hits[width][0] += int((pred[band] == item["mask"][band].long()).sum())
                    hits[width][1] += int(band.sum())
        seconds = (time.perf_counter() - start) / len(dataset)
        result = scores(confmat.compute(), classes)
        results[crf] = (result["mIoU"], {w: h / max(t, 1) for w, (h, t) in hits.items()}, seconds)
    print(f"{len(dataset)} images of {cfg.data.name} {args.split}, ckpt {args.ckpt}, CRF {params}")
    print("| | mIoU | " + " | ".join(f"trimap acc {w} px" for w in args.band) + " | s / image |")
    print("|---|---|" + "---|" * len(args.band) + "---|")
    for crf, (miou, trimap, seconds) in results.items():
        cells = " | ".join(f"{trimap[w]:.4f}" for w in args.band)
        print(f"| {'with CRF' if crf else 'no CRF'} | {miou:.4f} | {cells} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
