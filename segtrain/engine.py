"""Task functions: a composed config in, a trained or evaluated model out.

The config has been validated by the time these run (``segtrain.config.validate``); here
everything is instantiated from it and handed to Lightning's Trainer.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segtrain.callbacks import PredictionWriter
from segtrain import distributed
from segtrain.checkpoint import check_classes, load_checkpoint, read_metadata, stored_config
from segtrain.config import MEDIAN_FREQUENCY, validate
from segtrain.errors import SegtrainError
from segtrain.metrics import format_table
from segtrain.tasks.semantic import SemanticSegmentation

log = logging.getLogger(__name__)


def build_task(cfg: DictConfig) -> SemanticSegmentation:
    scheduler = cfg.get("scheduler")
    return SemanticSegmentation(
        model=instantiate(cfg.model),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(scheduler) if scheduler else None,
        classes=list(cfg.data.classes),
        palette=OmegaConf.to_container(cfg.data.palette),
        mean=list(cfg.data.mean),
        std=list(cfg.data.std),
        ignore_index=cfg.data.ignore_index,
        inference=OmegaConf.to_container(cfg.inference, resolve=True),
        config=OmegaConf.to_container(cfg, resolve=True),
        lr_base_batch_size=OmegaConf.select(cfg, "auto_scale_lr.base_batch_size")
        if OmegaConf.select(cfg, "auto_scale_lr.enable") else None,
    )


def build_trainer(cfg: DictConfig, rank_function: str | None = None, **overrides) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``. ``rank_function`` (e.g. ``segtrain.engine.fit``) is what the extra
    ranks of a ``trainer.strategy=ddp`` run execute on ``cfg`` (see ``segtrain.distributed``)."""
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]
    strategy = distributed.strategy_for(cfg, rank_function)
    kwargs = {"callbacks": callbacks, "logger": loggers or False, **overrides}
    if strategy is not None:
        kwargs["strategy"] = strategy
    return instantiate(cfg.trainer, **kwargs)


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def find_resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from.

    A run whose own directory already holds checkpoints (a SLURM job requeued by ``scontrol requeue``,
    preemption or its time limit) continues from the newest of them: Lightning's ``hpc_ckpt_N.ckpt``,
    saved on SLURM's requeue signal, or ``last.ckpt``. Otherwise ``resume=true`` takes the
    newest ``last.ckpt`` among earlier runs beside this one, and ``resume=PATH`` that file.
    """
    here = output_dir(cfg)
    own = [*here.glob("hpc_ckpt_*.ckpt"), *here.glob("checkpoints/last.ckpt")]
    if own:
        checkpoint = max(own, key=lambda path: path.stat().st_mtime)
        log.info("this run was requeued: resuming from %s", checkpoint)
        return str(checkpoint)
    resume = cfg.get("resume")
    if not resume:
        return None
    if isinstance(resume, str):
        if not Path(resume).is_file():
            raise SegtrainError(f"resume={resume} does not exist; pass resume=true or the path of a .ckpt")
        return resume
    runs = sorted((p for p in here.parent.iterdir() if p.is_dir() and p != here), reverse=True)
    for run in runs:
        last = run / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
    raise SegtrainError(
        f"resume=true found no checkpoints/last.ckpt in earlier runs under {here.parent}; "
        "start without resume, or pass resume=/path/to/last.ckpt"
    )


def write_metrics(cfg: DictConfig, result: dict, name: str) -> Path:
    path = output_dir(cfg) / name
    path.write_text(json.dumps(result, indent=2))
    return path


def resolve_class_weights(cfg: DictConfig) -> None:
    """``loss.class_weights=median_frequency``: computed from the train split's masks, and stored as
    numbers in the config (and so in checkpoints)."""
    if OmegaConf.select(cfg, "loss.class_weights") != MEDIAN_FREQUENCY:
        return
    from segtrain.check_data import median_frequency_weights, scan_split

    datamodule, report = scan_split(cfg.data, cfg.data.train_split)
    weights = median_frequency_weights(report, datamodule.num_classes)
    log.info("median-frequency class weights from %d train masks: %s", report.pairs, weights)
    cfg.loss.class_weights = weights


def resolve_resume(cfg: DictConfig) -> None:
    """Replaces ``resume`` with the checkpoint to continue from (null for a fresh run), so that every
    rank continues from the same file, and reattaches a wandb logger to the run it continues."""
    checkpoint = find_resume_checkpoint(cfg)
    cfg.resume = checkpoint
    wandb_id = read_metadata(checkpoint).get("wandb_id") if checkpoint else None
    if wandb_id and OmegaConf.select(cfg, "logger.wandb"):
        cfg.logger.wandb.id = wandb_id
        cfg.logger.wandb.resume = "allow"


def train(cfg: DictConfig) -> float | None:
    """Fit, print the validation table and return the best val mIoU (what sweeps optimise)."""
    validate(cfg)
    resolve_class_weights(cfg)
    resolve_resume(cfg)
    return fit(cfg)


def fit(cfg: DictConfig) -> float | None:
    """What every rank runs, on the config ``train`` resolved."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = build_task(cfg)
    trainer = build_trainer(cfg, rank_function="segtrain.engine.fit")
    trainer.callbacks.append(distributed.RankRecord(output_dir(cfg) / "ranks", task.config))
    for logger in trainer.loggers:
        logger.log_hyperparams(task.config)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("resume") or None)
    if task.val_scores is None or not trainer.is_global_zero:
        return None
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    best_value = float(best) if best is not None else task.val_scores["mIoU"]
    print(format_table(task.val_scores, title=f"validation after epoch {trainer.current_epoch}"))
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path:
        print(f"best val/mIoU {best_value * 100:.2f}: {trainer.checkpoint_callback.best_model_path}")
    write_metrics(cfg, {**task.val_scores, "best_val_mIoU": best_value, "epochs": trainer.current_epoch},
                  "val_metrics.json")
    return best_value


def load_task(cfg: DictConfig) -> tuple[SemanticSegmentation, DictConfig]:
    """A model from ``cfg.ckpt`` with its stored config, this command's overrides applied."""
    checkpoint = load_checkpoint(cfg.ckpt)
    merged = stored_config(checkpoint, cfg)
    check_classes(checkpoint, merged, cfg.ckpt)
    task = build_task(merged)
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval(), merged


def evaluate(cfg: DictConfig) -> dict:
    task, merged = load_task(cfg)
    validate(merged)
    datamodule = instantiate(merged.data)
    trainer = build_trainer(merged, logger=False)
    if cfg.get("save_predictions"):
        predictions = output_dir(cfg) / "predictions"
        trainer.callbacks.append(PredictionWriter(predictions, datamodule.encoding.inverse))
    trainer.test(task, datamodule=datamodule, verbose=False)
    result = task.test_scores
    print(format_table(result, title=f"{merged.data.get('name', '')} split={merged.data.split} ckpt={cfg.ckpt}"))
    print(f"metrics written to {write_metrics(cfg, result, 'metrics.json')}")
    if cfg.get("save_predictions"):
        print(f"predictions written to {predictions} in the dataset's own label encoding")
    return result
