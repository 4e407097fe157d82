"""``segtrain bench``: segtrain's training step against a plain PyTorch loop.

Both loops train the same model (same initial weights), on the same batches held in memory, with
the same loss, optimizer and schedule. A step is timed from one batch start to the next, so
segtrain's share covers everything Lightning and segtrain's callbacks add per iteration. The
rounds alternate to spread machine noise over both.
"""

from __future__ import annotations

import copy
import json
import statistics
import time

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segtrain.config import validate
from segtrain.engine import build_task, build_trainer, output_dir


class StepTimer(pl.Callback):
    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())


def plain_loop(task, batches: list[dict], total_steps: int) -> list[float]:
    """The loop a user would write by hand around the same model, loss, optimizer and schedule."""
    model, loss_fn = task.model.train(), task.loss
    mean, std = task.pixel_mean, task.pixel_std
    optimizer = task.optimizer_factory(params=[p for p in model.parameters() if p.requires_grad])
    scheduler = task.scheduler_factory(optimizer, total_steps=total_steps) if task.scheduler_factory else None
    starts = []
    for batch in batches:
        starts.append(time.perf_counter())
        logits = model((batch["image"].float() - mean) / std)
        loss = loss_fn(logits, batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    starts.append(time.perf_counter())
    return starts


def segtrain_loop(cfg: DictConfig, task, batches: list[dict]) -> list[float]:
    """The configured trainer, loggers and callbacks; only checkpointing is off (nothing to validate)."""
    timer = StepTimer()
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
    return timer.starts


def step_times(starts: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(starts, starts[1:])][warmup:]


def bench(cfg: DictConfig) -> dict:
    validate(cfg)
    pl.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    steps = cfg.bench.steps
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({"image": batch["image"], "mask": batch["mask"]})
        if len(batches) == steps:
            break
    reference = build_task(cfg)
    times = {"plain": [], "segtrain": []}
    for _ in range(cfg.bench.rounds):
        task = copy.deepcopy(reference)
        times["plain"] += step_times(plain_loop(task, batches, steps), cfg.bench.warmup)
        task = copy.deepcopy(reference)
        times["segtrain"] += step_times(segtrain_loop(cfg, task, batches), cfg.bench.warmup)
    plain = statistics.median(times["plain"])
    ours = statistics.median(times["segtrain"])
    result = {
        "model": cfg.model._target_,
        "batch_size": cfg.data.batch_size,
        "steps_timed": len(times["plain"]),
        "plain_step_s": plain,
        "segtrain_step_s": ours,
        "ratio": ours / plain,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"plain PyTorch step  {plain * 1000:8.2f} ms (median of {len(times['plain'])})")
    print(f"segtrain step       {ours * 1000:8.2f} ms (median of {len(times['segtrain'])})")
    print(f"ratio segtrain / plain = {ours / plain:.3f}")
    (output_dir(cfg) / "bench.json").write_text(json.dumps(result, indent=2))
    return result
