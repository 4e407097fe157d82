"""Task functions: a composed config in, a trained or evaluated model out.

The config has been validated by the time these run (``segtrain.config.validate``); here
everything is instantiated from it and handed to Lightning's Trainer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from segtrain import distributed
from segtrain.callbacks import PredictionWriter, TrainingLog, duration
from segtrain.checkpoint import check_classes, composed_config, load_checkpoint, read_metadata, stored_config
from segtrain.config import MEDIAN_FREQUENCY, check_accelerator, requeued, validate
from segtrain.errors import SegtrainError
from segtrain.inference import score_resolution
from segtrain.metrics import format_table, percent
from segtrain.plots import per_class_iou
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
        config=composed_config(cfg),
        resolved_config=OmegaConf.to_container(cfg, resolve=True),
        lr_base_batch_size=OmegaConf.select(cfg, "auto_scale_lr.base_batch_size")
        if OmegaConf.select(cfg, "auto_scale_lr.enable")
        else None,
        channels_last=bool(OmegaConf.select(cfg, "trainer.channels_last")),
        compile=OmegaConf.to_container(cfg.trainer.compile)
        if OmegaConf.select(cfg, "trainer.compile")
        else None,
    )


#: Keys of ``cfg.trainer`` that segtrain applies to the model itself; the others are Trainer arguments.
MODEL_RUNTIME_KEYS = ("channels_last", "compile", "threads")


def build_trainer(cfg: DictConfig, rank_function: str | None = None, **overrides) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``. ``rank_function`` (e.g. ``segtrain.engine.fit``) is what the extra
    ranks of a ``trainer.strategy=ddp`` run execute on ``cfg`` (see ``segtrain.distributed``)."""
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
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in MODEL_RUNTIME_KEYS:
        trainer_cfg.pop(key, None)
    return instantiate(trainer_cfg, **kwargs)


def set_threads(cfg: DictConfig) -> int:
    """torch's CPU threads for this process: ``trainer.threads``, else ``OMP_NUM_THREADS`` when set, else the
    cores this process may use, shared between the training processes on the node, less one per loader
    worker, at least 1. torch's default of one thread per core fights the loader workers and the other
    processes for the same cores: on 2 busy cores the default run took 7x the CPU time."""
    threads = OmegaConf.select(cfg, "trainer.threads") or os.environ.get("OMP_NUM_THREADS")
    if not threads:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        nodes = int(OmegaConf.select(cfg, "trainer.num_nodes") or 1)
        processes = max(distributed.process_count(cfg) // nodes, 1)
        workers = int(OmegaConf.select(cfg, "data.num_workers") or 0)
        threads = max(1, cores // processes - workers)
        log.info(
            "torch threads: %d (%d cores, %d processes, %d loader workers each; trainer.threads=N overrides)",
            threads,
            cores,
            processes,
            workers,
        )
    torch.set_num_threads(int(threads))
    return int(threads)


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def find_resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, or None for a fresh run.

    - A job SLURM restarted (``scontrol requeue``, preemption, its time limit), or a run told
      ``resume=true`` whose own directory holds checkpoints, continues from the newest of them:
      Lightning's ``hpc_ckpt_N.ckpt`` (saved on SLURM's requeue signal) or ``last.ckpt``.
    - Otherwise ``resume=true`` takes the newest ``last.ckpt`` of the earlier runs beside this one,
      leaving out debug runs (``debug=...``), and ``resume=PATH`` takes that file.
    """
    here = output_dir(cfg)
    resume = cfg.get("resume")
    own = [*here.glob("hpc_ckpt_*.ckpt"), *here.glob("checkpoints/last.ckpt")]
    if own and (requeued() or resume is True):
        checkpoint = max(own, key=lambda path: path.stat().st_mtime)
        log.info("%s: resuming from %s", "this run was requeued" if requeued() else "resume=true", checkpoint)
        return str(checkpoint)
    if not resume:
        return None
    if isinstance(resume, str):
        return resume
    candidates = [last for last in here.parent.glob("*/checkpoints/last.ckpt") if last.parents[1] != here]
    debug_runs = [last for last in candidates if read_metadata(last, "resume").get("debug_run")]
    runs = [last for last in candidates if last not in debug_runs]
    if runs:
        checkpoint = max(runs, key=lambda path: path.stat().st_mtime)
        log.info("resuming from %s", checkpoint)
        return str(checkpoint)
    skipped = f" ({len(debug_runs)} debug runs left out)" if debug_runs else ""
    raise SegtrainError(
        f"resume=true found no checkpoints/last.ckpt of an earlier run under {here.parent}{skipped}; "
        "start without resume, or pass resume=/path/to/last.ckpt"
    )


def describe_resume(checkpoint: str, stored: dict | None, cfg: DictConfig) -> None:
    """Says which settings differ from ``stored``, the resolved config of the run being continued, and
    which of them a resume cannot change."""
    if not stored:
        return
    changed = config_changes(stored, OmegaConf.to_container(cfg, resolve=True))
    if not changed:
        log.info("resuming %s with the same settings", checkpoint)
        return
    lines = [f"resuming {checkpoint}; settings that differ from that run:"]
    for key, before, after in changed:
        kept = key.split(".")[0] in ("optimizer", "scheduler")
        lines.append(
            f"  {key}: {before!r} -> {after!r}"
            + (" (kept as before: the optimizer and scheduler state are restored)" if kept else "")
        )
    log.warning("\n".join(lines))


#: Where a run writes and how it logs: not part of what it trains.
_NOT_RECIPE = ("resume", "paths", "hydra", "logger", "callbacks", "task_name", "trainer.default_root_dir")


def config_changes(before: dict, after: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    changes = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        if any(path == skip or path.startswith(skip + ".") for skip in _NOT_RECIPE):
            continue
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, path + ".")
        elif old != new:
            changes.append((path, old, new))
    return changes


def write_metrics(cfg: DictConfig, result: dict, name: str) -> Path:
    path = output_dir(cfg) / name
    path.write_text(json.dumps(result, indent=2))
    return path


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data config's module, told at which resolution validation and evaluation score."""
    return instantiate(cfg.data, score_resolution=score_resolution(cfg.inference))


def describe_resolution(cfg: DictConfig) -> str:
    """The resolution predictions are scored and written at, for titles and messages."""
    if score_resolution(cfg.inference) == "original":
        return "each image's own resolution"
    return "the size data.val_transforms give (inference.score_resolution=transformed)"


def describe_inference(cfg: DictConfig) -> str:
    """The inference settings a table was made with: mode, windows, flip, scales, CRF."""
    inference = cfg.inference
    parts = [str(inference.mode)]
    if inference.mode == "slide":
        stride = list(inference.stride) if inference.get("stride") else "half"
        parts[0] += f" (windows {list(inference.crop_size)}, stride {stride})"
    parts.append(f"flip {'on' if inference.flip else 'off'}")
    parts.append(f"scales {list(inference.scales)}")
    parts.append(f"CRF {'on' if inference.get('crf') else 'off'}")
    return "inference " + ", ".join(parts)


def resolve_class_weights(cfg: DictConfig) -> None:
    """``loss.class_weights=median_frequency``: computed from the train split's masks, and stored as
    numbers in the config (and so in checkpoints)."""
    if OmegaConf.select(cfg, "loss.class_weights") != MEDIAN_FREQUENCY:
        return
    from segtrain.data.statistics import median_frequency_weights, scan_split

    datamodule, report = scan_split(cfg.data, cfg.data.train_split)
    weights = median_frequency_weights(report, datamodule.num_classes)
    log.info("median-frequency class weights from %d train masks: %s", report.pairs, weights)
    cfg.loss.class_weights = weights


def resolve_resume(cfg: DictConfig) -> None:
    """Replaces ``resume`` with the checkpoint to continue from (null for a fresh run), so that every
    rank continues from the same file, and reattaches a wandb logger to the run it continues."""
    checkpoint = find_resume_checkpoint(cfg)
    cfg.resume = checkpoint
    if not checkpoint:
        return
    metadata = read_metadata(checkpoint, "resume")
    describe_resume(checkpoint, metadata.get("resolved_config"), cfg)
    wandb_id = metadata.get("wandb_id")
    if wandb_id and OmegaConf.select(cfg, "logger.wandb"):
        cfg.logger.wandb.id = wandb_id
        cfg.logger.wandb.resume = "allow"


def train(cfg: DictConfig) -> float | None:
    """Fit, print the validation table and return the best val mIoU (what sweeps optimise)."""
    validate(cfg)
    check_accelerator(cfg)
    resolve_class_weights(cfg)
    resolve_resume(cfg)
    return fit(cfg)


def fit(cfg: DictConfig) -> float | None:
    """What every rank runs, on the config ``train`` resolved."""
    pl.seed_everything(cfg.seed, workers=True)
    set_threads(cfg)
    # The model first: a backbone whose pretrained weights cannot be had stops the run before any data work.
    task = build_task(cfg)
    datamodule = build_datamodule(cfg)
    trainer = build_trainer(cfg, rank_function="segtrain.engine.fit")
    trainer.callbacks.append(distributed.RankRecord(output_dir(cfg) / "ranks", task.resolved_config))
    for logger in trainer.loggers:
        logger.log_hyperparams(task.resolved_config)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("resume") or None, weights_only=True)
    if task.val_scores is None or not trainer.is_global_zero:
        return None
    monitoring = next((callback for callback in trainer.checkpoint_callbacks if callback.monitor), None)
    best = monitoring.best_model_score if monitoring else None
    best_value = float(best) if best is not None else task.val_scores["mIoU"]
    title = f"validation after epoch {trainer.current_epoch}, scored at {describe_resolution(cfg)}"
    log.info("%s", format_table(task.val_scores, title=title))
    metrics_path = write_metrics(
        cfg,
        {
            **task.val_scores,
            "best_val_mIoU": best_value,
            "epochs": trainer.current_epoch,
            "launch_to_first_step_s": task.launch_to_first_step_s,
            "units": "scores are fractions (0-1); tables and logs show them in percent",
        },
        "val_metrics.json",
    )
    summarize_training(trainer, monitoring, best_value, metrics_path)
    return best_value


def summarize_training(trainer: pl.Trainer, monitoring, best_value: float, metrics_path: Path) -> None:
    """Where everything is and how it went, as the last lines of a training run."""
    training_log = next((c for c in trainer.callbacks if isinstance(c, TrainingLog)), None)
    best_row = training_log.best() if training_log else None
    took = f" in {duration(time.monotonic() - training_log.started)}" if training_log else ""
    best_epoch = f" at epoch {best_row['epoch']}" if best_row else ""
    epochs = f"{trainer.current_epoch} epochs"
    lines = [f"training finished{took}: {epochs}, best val mIoU {percent(best_value)}{best_epoch}"]
    if monitoring is not None and monitoring.best_model_path:
        lines.append(f"  best checkpoint: {monitoring.best_model_path}")
    last = next(
        (c.last_model_path or c.best_model_path for c in trainer.checkpoint_callbacks if not c.monitor), ""
    )
    if last:
        lines.append(f"  last checkpoint: {last}")
    curves = Path(trainer.default_root_dir) / "curves.png"
    if curves.is_file():
        lines.append(f"  curves:          {curves}")
    overlays = Path(trainer.default_root_dir) / "overlays"
    if overlays.is_dir():
        lines.append(f"  val overlays:    {overlays}")
    lines.append(f"  metrics:         {metrics_path}")
    log.info("%s", "\n".join(lines))
    return best_value


def load_task(cfg: DictConfig, data_root: bool = True) -> tuple[SemanticSegmentation, DictConfig]:
    """A model from ``cfg.ckpt`` with its stored config, this command's overrides applied and validated
    (``data_root``: whether this command reads the dataset)."""
    checkpoint = load_checkpoint(cfg.ckpt)
    merged = stored_config(checkpoint, cfg)
    check_classes(checkpoint, merged, cfg.ckpt)
    validate(merged, data_root=data_root)
    check_accelerator(merged)
    set_threads(merged)
    task = build_task(merged)
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        trained = (
            checkpoint["segtrain"].get("resolved_config", checkpoint["segtrain"]["config"]).get("model", {})
        )
        raise SegtrainError(
            f"the weights in ckpt={cfg.ckpt} do not fit model={merged.model.get('_target_')} as configured "
            f"(trained as {trained.get('_target_')}): {str(err).splitlines()[-1].strip()[:300]}. Drop the "
            "model overrides; eval, predict and export use the model the checkpoint was trained with."
        ) from None
    return task.eval(), merged


def evaluate(cfg: DictConfig) -> dict:
    task, merged = load_task(cfg)
    datamodule = build_datamodule(merged)
    trainer = build_trainer(merged, logger=False)
    if cfg.get("save_predictions"):
        predictions = output_dir(cfg) / "predictions"
        trainer.callbacks.append(PredictionWriter(predictions, datamodule.build("eval"), datamodule.palette))
    root, split = merged.data.get("root"), merged.data.split
    images = len(datamodule.build("eval"))
    log.info(
        "evaluating ckpt=%s on data=%s root=%s split=%s: %d images, inference: %s",
        cfg.ckpt,
        merged.data.get("name", ""),
        root,
        split,
        images,
        describe_inference(merged),
    )
    started = time.perf_counter()
    trainer.test(task, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - started
    result = {
        **task.test_scores,
        "units": "scores are fractions (0-1); tables and logs show them in percent",
        "seconds": seconds,
        "images_per_s": images / seconds,
        "data": merged.data.get("name"),
        "root": root,
        "split": split,
        "images": images,
        "ckpt": str(cfg.ckpt),
        "inference": {
            **OmegaConf.to_container(merged.inference, resolve=True),
            "score_resolution": score_resolution(merged.inference),
        },
    }
    title = (
        f"{merged.data.get('name', '')} root={root} split={split} ({images} images, {result['pixels']} "
        f"labelled pixels), {describe_inference(merged)}, scored at {describe_resolution(merged)}; "
        f"ckpt={cfg.ckpt}"
    )
    log.info("%s", format_table(result, title=title))
    log.info("%d images in %.1f s (%.1f images/s, loading included)", images, seconds, images / seconds)
    chart = per_class_iou(result, output_dir(cfg) / "per_class_iou.png", title=f"{result['data']} {split}")
    log.info(
        "metrics written to %s, per-class IoU chart to %s", write_metrics(cfg, result, "metrics.json"), chart
    )
    if cfg.get("save_predictions"):
        log.info(
            "predictions written to %s in the dataset's own encoding, at %s",
            predictions,
            describe_resolution(merged),
        )
    return result
