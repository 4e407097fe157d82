"""The Trainer a config describes, and the machine settings (threads) a job runs with, whatever its task."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from segtrain.runtime import distributed
from segtrain.runtime.processes import idle_cores

log = logging.getLogger(__name__)

#: What ``segtrain train`` writes into a finished job's directory: the val scores and the best of them.
METRICS_FILE = "val_metrics.json"


def build_trainer(cfg: DictConfig, rank_function: str | None = None, **overrides) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``. ``rank_function`` (e.g. ``segtrain.commands.train.fit``) is what the
    extra ranks of a ``trainer.strategy=ddp`` run execute on ``cfg``
    (see ``segtrain.runtime.distributed``)."""
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    if not sys.stdout.isatty():  # a bar redrawn into a file or a pipe is noise: TrainingLog prints lines
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]
    strategy = distributed.strategy_for(cfg, rank_function)
    kwargs = {"callbacks": callbacks, "logger": loggers or False, **overrides}
    if (
        not any(isinstance(callback, ProgressBar) for callback in callbacks)
        and "enable_progress_bar" not in overrides
    ):
        # callbacks.progress_bar=null means no bar: Lightning's fallback bar reads the loss back from the
        # device every step, which stalls a GPU's queue of work.
        kwargs["enable_progress_bar"] = False
    if strategy is not None:
        kwargs["strategy"] = strategy
    return instantiate(cfg.trainer, **kwargs)


def set_threads(cfg: DictConfig) -> int:
    """torch's CPU threads for this process: ``runtime.threads``, else ``OMP_NUM_THREADS`` when set, else the
    idle cores this process may use (``idle_cores``), shared between the training processes on the node,
    less one per loader worker, at least 1. torch's default of one thread per core fights the loader
    workers and the other processes for the same cores: on 2 busy cores the default run took 7x the CPU
    time."""
    threads = OmegaConf.select(cfg, "runtime.threads") or os.environ.get("OMP_NUM_THREADS")
    if not threads:
        cores = idle_cores()
        nodes = int(OmegaConf.select(cfg, "trainer.num_nodes") or 1)
        processes = max(distributed.process_count(cfg) // nodes, 1)
        workers = int(OmegaConf.select(cfg, "data.num_workers") or 0)
        threads = max(1, cores // processes - workers)
        log.info(
            "torch threads: %d (%d idle cores, %d processes, %d loader workers each; runtime.threads=N "
            "overrides)",
            threads,
            cores,
            processes,
            workers,
        )
    torch.set_num_threads(int(threads))
    return int(threads)


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def write_metrics(cfg: DictConfig, result: dict, name: str) -> Path:
    path = output_dir(cfg) / name
    path.write_text(json.dumps(result, indent=2))
    return path
