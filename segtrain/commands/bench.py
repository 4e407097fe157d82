"""``segtrain bench``: segtrain's training step against the best hand-written PyTorch loop
(``bench.data=true``: the data pipeline alone).

Both loops train the same model (same initial weights), on the same batches held in pinned host memory,
with the same loss, optimizer and schedule, on the configured accelerator, precision and memory format
(``runtime.channels_last``); the hand-written loop is compiled when ``bench.compile_reference`` says so
(default: when segtrain compiles). Throughput is taken over the steps after warm-up, between two device
synchronisations, so asynchronous GPU work is counted in full. The rounds alternate to spread machine
noise over both. FLOPs per step come from ``torch.utils.flop_counter``; MFU divides the achieved rate by
the device's peak (``bench.peak_tflops``, or the dense bf16 peak of known cards).

For finding where one loop loses to the other: ``bench.json`` counts what torch.compile did in each loop
(frames compiled, graphs, graph breaks with their reasons), and ``bench.profile=N`` records N steps after
warm-up of each loop in one more round with the torch profiler (operator tables and Chrome traces).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import statistics
import time
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from segtrain.data.datamodule import build_datamodule
from segtrain.errors import SegtrainError
from segtrain.runtime.profiling import StepProfiler, compile_counts, time_rounds
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


def start_timing(device: torch.device) -> None:
    """Where both loops start their clocks: the device idle, and Python's garbage collector emptied. What the
    set-up allocated (a Trainer, compiled graphs: ~800,000 objects) otherwise sets off a full collection,
    0.6-0.8 s on a CPU core, inside whichever loop's timed steps come next (seen in segtrain's, one round in
    three); a real run pays it once, not per 20 steps."""
    gc.collect()
    synchronize(device)


def autocast(cfg: DictConfig, device: torch.device, cache_enabled: bool = True):
    """What ``trainer.precision`` does to the forward pass, as a user writes it (``cache_enabled=False``: as
    Lightning 2.6 writes it)."""
    precision = str(cfg.trainer.precision)
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    if precision.startswith("16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.float16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


class StepTimer(pl.Callback):
    """Times segtrain's steps after ``warmup`` up to the end of the last one, synchronising the device at
    both ends. The hooks that run once when training ends (TrainingLog's curves.png, the loggers' last
    writes) are timed apart (``end_seconds``): counted among 20 GPU steps they weighed as much as a third of
    them, where a real run spreads them over thousands."""

    def __init__(self, device: torch.device, warmup: int, steps: int):
        self.device, self.warmup, self.last = device, warmup, steps - 1
        self.start: float | None = None
        self.stopped: float | None = None
        self.seconds = 0.0
        self.end_seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            start_timing(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.last:
            synchronize(self.device)
            self.stopped = time.perf_counter()
            self.seconds = self.stopped - self.start

    def on_train_end(self, trainer, pl_module):
        self.end_seconds = time.perf_counter() - self.stopped


@dataclass(frozen=True)
class Departure:
    """Ways the hand-written loop can be made to do what segtrain's Lightning step does, one at a time: the
    candidates for a gap between the two (``scripts/compile_gap.py`` times each)."""

    #: Lightning 2.6's mixed-precision autocast runs with ``cache_enabled=False``.
    autocast_cache: bool = True
    #: Lightning's automatic optimization runs forward and backward inside ``optimizer.step(closure)``.
    closure: bool = False
    #: The first non-finite loss recorded on the device each step (``TaskModule.watch_nonfinite``).
    nonfinite_flag: bool = False
    #: torch.compile over the whole loss (model and criterion), not the model alone.
    compile_loss: bool = False


def plain_loop(
    cfg: DictConfig,
    task,
    batches: list[dict],
    warmup: int,
    compile_model: bool,
    profiler: StepProfiler | None = None,
    departure: Departure = Departure(),
) -> float:
    """The loop a user would write by hand around the same model, loss, optimizer and schedule; returns the
    seconds of the steps after ``warmup``."""
    device = device_of(cfg)
    model = task.model.to(device).train()
    task.to(device)
    model.to(memory_format=task.memory_format)
    compile_model_alone = compile_model and not departure.compile_loss
    run = torch.compile(model, **task.compile_kwargs) if compile_model_alone else model

    def loss_of(batch: dict) -> torch.Tensor:
        return task.reference_loss(run, batch, device)

    if compile_model and departure.compile_loss:
        loss_of = torch.compile(loss_of, **task.compile_kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = task.optimizer_factory(params=params, **fused_on_gpu(task.optimizer_factory, params))
    scheduler = (
        task.scheduler_factory(optimizer, total_steps=len(batches)) if task.scheduler_factory else None
    )
    nonfinite_step = torch.tensor(-1, device=device)
    start = None
    if profiler:
        profiler.start()
    for index, batch in enumerate(batches):
        if index == warmup:
            start_timing(device)
            start = time.perf_counter()

        def closure() -> torch.Tensor:
            with autocast(cfg, device, departure.autocast_cache):
                loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        if departure.closure:
            loss = optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step()
        if departure.nonfinite_flag:
            bad = ~torch.isfinite(loss.detach()) & (nonfinite_step < 0)
            nonfinite_step = torch.where(bad, torch.full_like(nonfinite_step, index), nonfinite_step)
        if scheduler is not None:
            scheduler.step()
        if profiler:
            profiler.step()
    synchronize(device)
    if profiler:
        profiler.stop()
    return time.perf_counter() - start


def segtrain_loop(
    cfg: DictConfig, task, batches: list[dict], warmup: int, profiler: StepProfiler | None = None
) -> tuple[float, float]:
    """The configured trainer, loggers and callbacks; only checkpointing is off (nothing to validate).
    Returns the seconds of the steps after ``warmup`` and those of the hooks that run once at the end. The
    timer runs last among the callbacks, so every hook of every step is inside the steps' time."""
    timer = StepTimer(device_of(cfg), warmup, len(batches))
    cfg = OmegaConf.merge(cfg, {"callbacks": {"model_checkpoint": None, "last_checkpoint": None}})
    trainer = build_trainer(
        cfg,
        max_steps=len(batches),
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    trainer.callbacks.extend([timer, profiler] if profiler else [timer])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(task, train_dataloaders=loader)
    return timer.seconds, timer.end_seconds


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


def profile_loops(cfg: DictConfig, reference, batches: list[dict], compile_reference: bool) -> None:
    """``bench.profile``: one more round of both loops under the profiler, apart from the timed rounds so that
    its overhead stays out of them."""
    device, warmup, steps = device_of(cfg), cfg.bench.warmup, cfg.bench.profile
    directory = output_dir(cfg)
    plain = StepProfiler(device, warmup, steps, directory, "plain")
    plain_loop(cfg, copy.deepcopy(reference), batches, warmup, compile_reference, plain)
    ours = StepProfiler(device, warmup, steps, directory, "segtrain")
    segtrain_loop(cfg, copy.deepcopy(reference), batches, warmup, ours)


def prepare(cfg: DictConfig) -> tuple[DictConfig, pl.LightningModule, list[dict]]:
    """The config with what training derives from the data (class weights, a referring model's vocabulary),
    the task module every loop trains a copy of, and ``bench.steps`` training batches held in memory."""
    check_accelerator(cfg)
    spec = task_spec(cfg)
    cfg = with_derived(cfg, spec.derive(cfg))
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    steps, warmup = cfg.bench.steps, cfg.bench.warmup
    if not 0 <= warmup < steps:
        raise SegtrainError(f"bench.warmup={warmup} must be >= 0 and below bench.steps={steps}")
    profiled = cfg.bench.get("profile") or 0
    if not 0 <= profiled <= steps - warmup:
        raise SegtrainError(
            f"bench.profile={profiled} must be >= 0 and at most bench.steps - bench.warmup = {steps - warmup}"
        )
    reference = build_task(cfg)
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(spec.bench_batch(batch))
        if len(batches) == steps:
            break
    return cfg, reference, batches


def bench(cfg: DictConfig) -> dict:
    validate(cfg)
    if cfg.bench.get("data"):
        return bench_data(cfg)
    cfg, reference, batches = prepare(cfg)
    warmup, profiled = cfg.bench.warmup, cfg.bench.get("profile") or 0
    device = device_of(cfg)
    compile_reference = cfg.bench.get("compile_reference")
    if compile_reference is None:
        compile_reference = reference.compile_enabled
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def plain_round() -> tuple[float, float]:
        return plain_loop(cfg, copy.deepcopy(reference), batches, warmup, compile_reference), 0.0

    def segtrain_round() -> tuple[float, float]:
        return segtrain_loop(cfg, copy.deepcopy(reference), batches, warmup)

    measured = time_rounds({"plain": plain_round, "segtrain": segtrain_round}, cfg.bench.rounds)
    seconds = {name: rounds.seconds for name, rounds in measured.items()}
    end_of_training = measured["segtrain"].after
    if profiled:
        profile_loops(cfg, reference, batches, compile_reference)
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
        # Over every timed round: a loop that compiles again after its first round, or breaks its graph,
        # shows it here (TORCH_LOGS=recompiles,graph_breaks says why).
        "torch_compile": {name: compile_counts(rounds.compiles) for name, rounds in measured.items()},
        # Python's garbage collections inside each round's timed steps: a full one stalls the device.
        "gc_in_timed_steps": {name: rounds.pauses for name, rounds in measured.items()},
        # Once per run, after the last step (curves.png, the loggers' last writes): not in the steps' time.
        "segtrain_end_of_training_s": end_of_training,
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
    for name, key in (("hand-written loop", "plain"), ("segtrain", "segtrain")):
        counts = result["torch_compile"][key]
        if counts["frames_compiled"]:
            print(
                f"torch.compile in the {name}: {counts['frames_compiled']} frames compiled, "
                f"{counts['graphs']} graphs, {counts['graph_breaks']} graph breaks"
            )
    print(
        f"segtrain's end of training (curves.png, the loggers' last writes), once per run and not in the "
        f"steps: {statistics.median(end_of_training):.2f} s"
    )
    if profiled:
        print(f"profiles of {profiled} steps: {output_dir(cfg)}/profile_{{plain,segtrain}}.txt")
    (output_dir(cfg) / "bench.json").write_text(json.dumps(result, indent=2))
    return result
