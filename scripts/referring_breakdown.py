"""A referring checkpoint's scores on the embedded data, split into expressions that name attributes only
("the red disc") and those that need a relation ("the red disc left of the blue square"), which only a
model that reads the whole expression gets right (benchmarks/referring.md).

    python scripts/referring_breakdown.py CKPT [--split val]
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from segtrain.data.datasets.shapes_referring import RELATIONS, ShapesReferring
from segtrain.data.referring import referring_collate
from segtrain.metrics import format_referring_table, referring_scores
from segtrain.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(checkpoint["segtrain"]["resolved_config"])
    task = build_task(cfg)
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    lengths = OmegaConf.to_container(cfg.data.dataset.lengths)
    dataset = ShapesReferring(args.split, vocabulary=task.vocabulary, lengths=lengths)
    overlaps = {"attributes only": [], "a relation": []}
    with torch.inference_mode():
        for start in range(0, len(dataset), 50):
            batch = referring_collate([dataset[i] for i in range(start, min(start + 50, len(dataset)))])
            predicted = torch.sigmoid(task(batch["image"], batch["tokens"])[:, 0]) > task.threshold
            target = batch["mask"] == 1
            for pred, truth, meta in zip(predicted, target, batch["meta"]):
                kind = "a relation" if any(r in meta["expression"] for r in RELATIONS) else "attributes only"
                overlaps[kind].append(((pred & truth).sum(), (pred | truth).sum()))
    for kind, pairs in overlaps.items():
        intersections, unions = (torch.stack(column) for column in zip(*pairs))
        print(
            format_referring_table(
                referring_scores(intersections, unions), f"{kind}: {len(pairs)} expressions"
            )
        )


if __name__ == "__main__":
    main()
