"""The model zoo table: parameters, GFLOPs and CPU forward+backward time of every model config.

    .venv/bin/python scripts/bench_models.py [--out benchmarks/models.md] [--models fcn8s segnet ...]

Each model is built from its conf/model/<name>.yaml at the paper's settings (21 classes, RGB; V-Net:
2 classes, 1 channel). GFLOPs (multiply-adds x 2, torch's FlopCounterMode) are counted on the meta
device at 512x512 (V-Net 128x128x128), so nothing is allocated. Time is the median of ``--repeats``
forward+backward passes of a batch of 2 (BatchNorm after global pooling needs more than one sample)
in training mode on this machine's CPU, at ``--time-size`` (V-Net: ``--time-size-3d``), after one
warm-up pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from segtrain.config import compose, config_groups

REPO = Path(__file__).resolve().parents[1]


def build(name: str, device: str = "cpu"):
    volume = name == "vnet"
    overrides = [f"model={name}"] + (
        ["experiment=vnet_decathlon", "data.root=/tmp"] if volume else ["data=voc", "data.root=/tmp"]
    )
    cfg = compose("config", overrides)
    if "backbone" in cfg.model:
        cfg.model.backbone.pretrained = False  # speed does not depend on the weights' values
    with torch.device(device):
        model = instantiate(cfg.model)
    return model, cfg.data.in_channels, volume


def logits_of(out):
    return out["out"] if isinstance(out, dict) else out


def gflops(name: str) -> float:
    model, channels, volume = build(name, "meta")
    size = (128, 128, 128) if volume else (512, 512)
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.empty(1, channels, *size, device="meta"))
    return counter.get_total_flops() / 1e9


def seconds(name: str, size: int, size_3d: int, repeats: int) -> tuple[float, tuple[int, ...]]:
    model, channels, volume = build(name)
    shape = (size_3d,) * 3 if volume else (size, size)
    x = torch.randn(2, channels, *shape)
    model.train()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        logits_of(model(x)).float().mean().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]), shape


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "models.md")
    parser.add_argument("--models", nargs="+", default=config_groups()["model"])
    parser.add_argument("--time-size", type=int, default=256)
    parser.add_argument("--time-size-3d", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in args.models:
        model, _, _ = build(name, "meta")
        params = sum(p.numel() for p in model.parameters()) / 1e6
        flops = gflops(name)
        elapsed, shape = seconds(name, args.time_size, args.time_size_3d, args.repeats)
        size = "x".join(map(str, shape))
        rows.append(f"| {name} | {params:.2f} | {flops:.1f} | {elapsed:.2f} ({size}) |")
        print(rows[-1], flush=True)
    header = [
        "# Model zoo: size, compute and CPU speed",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; torch "
        f"{torch.__version__}; {date.today().isoformat()}.",
        f"Command: `.venv/bin/python scripts/bench_models.py --time-size {args.time_size} "
        f"--time-size-3d {args.time_size_3d} --repeats {args.repeats}`",
        "",
        "Paper configurations (conf/model/*.yaml): 21 classes and RGB input (V-Net: 2 classes, 1 channel).",
        "GFLOPs at 512x512 (V-Net at 128x128x128), counted by torch's FlopCounterMode (2 x multiply-adds).",
        "Time: median seconds of one training-mode forward+backward of a batch of 2 on the CPU, at the",
        "size in brackets.",
        "",
        "| model | params (M) | GFLOPs | CPU fwd+bwd s, batch 2 (size) |",
        "|---|---|---|---|",
    ]
    args.out.write_text("\n".join(header + rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
