"""``segtrain bench``: segtrain's training step against the best hand-written PyTorch loop
(``bench.data=true``: the data pipeline alone).

Both loops train the same model (same initial weights), on the same batches held in pinned host memory,
with the same loss, optimizer and schedule, on the configured accelerator, precision and memory format
(``runtime.channels_last``); the hand-written loop is compiled when ``bench.compile_reference`` says so
(default: when segtrain compiles). Throughput is taken over the steps after warm-up, between two device
synchronisations, so asynchronous GPU work is counted in full. The rounds alternate to spread machine
noise over both. FLOPs per step come from ``torch.utils.flop_counter``; MFU divides the achieved rate by
the device's peak (``bench.peak_tflops``, or the dense bf16 peak of known cards).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import time

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from segtrain.data.datamodule import build_datamodule
from segtrain.errors import SegtrainError
from segtrain.runtime.trainer import build_trainer, output_dir
from segtrain.tasks import build_task, task_spec, with_derived
from segtrain.tasks.module import fused_on_gpu
from segtrain.validation import check_accelerator, validate

#: Dense bf16 tensor-core peaks (TFLOP/s) of the cards segtrain is measured on, from their data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "RTX 4090": 165.2}


def device_of(cfg: DictConfig) -> torch.device:
    return torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(cfg: DictConfig, device: torch.device):
    """What Lightning's ``trainer.precision`` does to the forward pass."""
    precision = str(cfg.trainer.precision)
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


class StepTimer(pl.Callback):
    """Times segtrain's steps after ``warmup``, synchronising the device at both ends."""

    def __init__(self, device: torch.device, warmup: int):
        self.device, self.warmup = device, warmup
        self.start: float | None = None
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def plain_loop(cfg: DictConfig, task, batches: list[dict], warmup: int, compile_model: bool) -> float:
    """The loop a user would write by hand around the same model, loss, optimizer and schedule; returns the
    seconds of the steps after ``warmup``."""
    device = device_of(cfg)
    model = task.model.to(device).train()
    task.to(device)
    model.to(memory_format=task.memory_format)
    run = torch.compile(model, **task.compile_kwargs) if compile_model else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = task.optimizer_factory(params=params, **fused_on_gpu(task.optimizer_factory, params))
    scheduler = (
        task.scheduler_factory(optimizer, total_steps=len(batches)) if task.scheduler_factory else None
    )
    start = None
    for index, batch in enumerate(batches):
        if index == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast(cfg, device):
            loss = task.reference_loss(run, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    synchronize(device)
    return time.perf_counter() - start


def segtrain_loop(cfg: DictConfig, task, batches: list[dict], warmup: int) -> float:
    """The configured trainer, loggers and callbacks; only checkpointing is off (nothing to validate)."""
    timer = StepTimer(device_of(cfg), warmup)
    cfg = OmegaConf.merge(cfg, {"callbacks": {"model_checkpoint": None, "last_checkpoint": None}})
    trainer = build_trainer(
        cfg,
        max_steps=len(batches),
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    trainer.callbacks.append(timer)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(task, train_dataloaders=loader)
    return timer.seconds


def step_flops(cfg: DictConfig, task, batch: dict) -> int:
    """FLOPs of one training step (forward and backward) of the model on ``batch``."""
    device = device_of(cfg)
    model = copy.deepcopy(task.model).to(device).train()
    task.to(device)
    with FlopCounterMode(display=False) as counter, autocast(cfg, device):
        task.reference_loss(model, batch, device).float().backward()
    return counter.get_total_flops()


def peak_tflops(cfg: DictConfig, device: torch.device) -> float | None:
    if cfg.bench.get("peak_tflops"):
        return float(cfg.bench.peak_tflops)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for card, peak in PEAK_BF16_TFLOPS.items() if card in name), None)


def loader_rate(data_cfg: DictConfig, workers: int, batches: int) -> float:
    """Images/s of the training DataLoader (decode, augmentation, collate, pinning) after its first batch,
    which pays for the workers' start."""
    data_cfg = data_cfg.copy()
    data_cfg.num_workers = workers
    datamodule = build_datamodule(data_cfg)
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
        images += len(batch["image"])
    return images / (time.perf_counter() - start)


def bench_data(cfg: DictConfig) -> dict:
    """``bench.data=true``: the data pipeline alone, at each of ``bench.data_workers`` (default: the
    configured ``data.num_workers``), so that the loader's ceiling and the model's are two numbers."""
    workers = list(cfg.bench.get("data_workers") or [cfg.data.num_workers])
    rates = {n: loader_rate(cfg.data, n, cfg.bench.steps) for n in workers}
    print(
        f"data={cfg.data.get('name')} batch={cfg.data.batch_size} crop={cfg.data.get('crop_size')} "
        f"cpus={os.cpu_count()}"
    )
    print("| workers | loader images/s | per worker |\n|---|---|---|")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.1f} | {rate / max(n, 1):.1f} |")
    result = {
        "data": cfg.data.get("name"),
        "batch_size": cfg.data.batch_size,
        "batches": cfg.bench.steps,
        "cpus": os.cpu_count(),
        "images_per_s": {str(n): rate for n, rate in rates.items()},
    }
    (output_dir(cfg) / "bench_data.json").write_text(json.dumps(result, indent=2))
    return result


def bench(cfg: DictConfig) -> dict:
    validate(cfg)
    if cfg.bench.get("data"):
        return bench_data(cfg)
    check_accelerator(cfg)
    spec = task_spec(cfg)
    # What training derives from the data first (class weights, a referring model's vocabulary).
    cfg = with_derived(cfg, spec.derive(cfg))
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    steps, warmup = cfg.bench.steps, cfg.bench.warmup
    if not 0 <= warmup < steps:
        raise SegtrainError(f"bench.warmup={warmup} must be >= 0 and below bench.steps={steps}")
    reference = build_task(cfg)
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(spec.bench_batch(batch))
        if len(batches) == steps:
            break
    device = device_of(cfg)
    compile_reference = cfg.bench.get("compile_reference")
    if compile_reference is None:
        compile_reference = reference.compile_enabled
    seconds = {"plain": [], "segtrain": []}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(cfg.bench.rounds):
        seconds["plain"].append(plain_loop(cfg, copy.deepcopy(reference), batches, warmup, compile_reference))
        seconds["segtrain"].append(segtrain_loop(cfg, copy.deepcopy(reference), batches, warmup))
    timed = len(batches) - warmup
    images = timed * cfg.data.batch_size
    plain, ours = statistics.median(seconds["plain"]), statistics.median(seconds["segtrain"])
    flops = step_flops(cfg, reference, batches[0])
    peak = peak_tflops(cfg, device)
    achieved = flops * timed / ours / 1e12
    result = {
        "model": cfg.model._target_,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(reference.channels_last),
        "compile": reference.compile_enabled,
        "compile_reference": bool(compile_reference),
        "batch_size": cfg.data.batch_size,
        "steps_timed": timed,
        "rounds": cfg.bench.rounds,
        "plain_images_per_s": images / plain,
        "segtrain_images_per_s": images / ours,
        "plain_step_s": plain / timed,
        "segtrain_step_s": ours / timed,
        "ratio": plain / ours,
        "step_tflop": flops / 1e12,
        "segtrain_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(
        f"device {result['device']}, {result['precision']}, channels_last={result['channels_last']}, "
        f"compile={result['compile']} (reference compiled: {result['compile_reference']})"
    )
    for name, key in (("hand-written loop", "plain"), ("segtrain", "segtrain")):
        rate, step = result[f"{key}_images_per_s"], result[f"{key}_step_s"] * 1000
        print(f"{name:<18} {rate:9.1f} images/s  {step:8.2f} ms/step")
    print(
        f"segtrain / hand-written throughput = {result['ratio']:.3f}; {achieved:.1f} TFLOP/s"
        + (f", MFU {result['mfu'] * 100:.1f}%" if peak else "")
    )
    (output_dir(cfg) / "bench.json").write_text(json.dumps(result, indent=2))
    return result
