"""Input-pipeline throughput against the model's consumption rate.

    .venv/bin/python scripts/bench_loader.py [--workers 0 1 2] [--batches 30] [overrides...]

Without overrides: experiment=camvid_cpu; data.root defaults to ../shared/data/camvid. For each worker
count it times the train DataLoader (decode, crop and augmentation as configured, uint8 collate, pinned memory
when a GPU is present) after its first batch, which pays for the workers' start. It then times the
configured model's training step on batches held in memory: the loader keeps the model fed when
its images/s exceed the model's.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from segtrain.bench import plain_loop
from segtrain.config import compose, validate
from segtrain.engine import build_task

REPO = Path(__file__).resolve().parents[1]

CAMVID = f"data.root={REPO.parent / 'shared' / 'data' / 'camvid'}"


def loader_rate(cfg, workers: int, batches: int) -> float:
    cfg.data.num_workers = workers
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        images += batch["image"].shape[0]
    return images / (time.perf_counter() - start)


def model_rate(cfg, steps: int) -> float:
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = build_task(cfg).to(device)
    iterator = iter(datamodule.train_dataloader())
    batches = [
        {key: value.to(device) for key, value in next(iterator).items() if key != "meta"}
        for _ in range(min(steps, 8))
    ]
    batches = (batches * (steps // len(batches) + 1))[:steps]
    starts = plain_loop(task, batches, total_steps=steps)
    warm = starts[2:]
    return batches[0]["image"].shape[0] * (len(warm) - 1) / (warm[-1] - warm[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=12)
    args, overrides = parser.parse_known_args()
    cfg = compose("config", [CAMVID, *(overrides or ["experiment=camvid_cpu"])])
    # Keys that a Hydra run resolves from its runtime; this script composes without one.
    cfg.run_name, cfg.paths.output_dir = "bench_loader", str(REPO / "outputs" / "bench_loader")
    validate(cfg)
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"data={cfg.data.name} crop={list(cfg.data.crop_size)} batch={cfg.data.batch_size} "
        f"model={cfg.model._target_} cpus={os.cpu_count()} cuda={torch.cuda.is_available()}"
    )
    print("| workers | loader images/s | per worker |")
    print("|---|---|---|")
    for workers in args.workers:
        rate = loader_rate(cfg.copy(), workers, args.batches)
        print(f"| {workers} | {rate:.1f} | {rate / max(workers, 1):.1f} |", flush=True)
    print(f"model training step consumes {model_rate(cfg, args.steps):.1f} images/s")


if __name__ == "__main__":
    main()
