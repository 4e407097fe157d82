"""``segtrain train``: validate the config, let the task resolve what derives from the data (class
weights), find the checkpoint to continue from, then fit the task ``cfg.task`` names on every rank."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from segtrain.metrics import percent
from segtrain.runtime import distributed
from segtrain.runtime.callbacks import TrainingLog, duration
from segtrain.runtime.resume import resolve_resume
from segtrain.runtime.trainer import METRICS_FILE, build_trainer, output_dir, set_threads, write_metrics
from segtrain.tasks import build_datamodule, build_task, task_spec, with_derived
from segtrain.validation import check_accelerator, validate, validated

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Fit, print the validation table and return the best val score of ``task.monitor`` (what picks
    best.ckpt and what sweeps optimise)."""
    if not validated(cfg):  # a sweep's job, or a run not started by the CLI
        validate(cfg)
        check_accelerator(cfg)
    derived = task_spec(cfg).derive(cfg)
    if derived:
        # Logged and kept beside the run; the checkpoints store the config with them applied.
        path = output_dir(cfg) / "derived.json"
        path.write_text(json.dumps(derived, indent=1))
        log.info(
            "derived from the data (%s): %s", path, ", ".join(f"{k}={short(v)}" for k, v in derived.items())
        )
        cfg = with_derived(cfg, derived)
    resolve_resume(cfg)
    return fit(cfg)


def short(value) -> str:
    """A derived value for the log: a long list by its length and first items."""
    if isinstance(value, list) and len(value) > 6:
        first = ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value[:4])
        return f"[{first}, ... ({len(value)} values)]"
    return repr(value)


def fit(cfg: DictConfig) -> float | None:
    """What every rank runs, on the config ``train`` resolved."""
    pl.seed_everything(cfg.seed, workers=True)
    set_threads(cfg)
    # The model first: a backbone whose pretrained weights cannot be had stops the run before any data work.
    task = build_task(cfg)
    datamodule = build_datamodule(cfg)
    # The splits are read (and their annotations checked) before the Trainer announces itself, so a data
    # refusal is the run's first and only line; Lightning's own setup call finds them built.
    datamodule.setup("fit")
    trainer = build_trainer(cfg, rank_function="segtrain.commands.train.fit")
    trainer.callbacks.append(distributed.RankRecord(output_dir(cfg) / "ranks", task.resolved_config))
    trainer.callbacks.append(distributed.StopTogether())
    for logger in trainer.loggers:
        logger.log_hyperparams(task.resolved_config)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("resume") or None, weights_only=True)
    if not trainer.is_global_zero:
        return None
    if task.val_scores is None:
        log.info(
            "training finished without a validation (see trainer.limit_val_batches, "
            "trainer.check_val_every_n_epoch and trainer.max_epochs), so no best checkpoint was chosen; "
            "last checkpoint: %s",
            last_checkpoint(trainer) or "none",
        )
        return None
    metric = str(cfg.task.monitor).removeprefix("val/")
    monitoring = next((callback for callback in trainer.checkpoint_callbacks if callback.monitor), None)
    best = monitoring.best_model_score if monitoring else None
    best_value = float(best) if best is not None else task.val_scores[metric]
    spec = task_spec(cfg)
    title = f"validation after epoch {trainer.current_epoch}, {spec.describe_scoring(cfg)}"
    log.info("%s", spec.score_table(task.val_scores, title))
    metrics_path = write_metrics(
        cfg,
        {
            **task.val_scores,
            f"best_val_{metric}": best_value,
            "monitor": f"val/{metric}",
            "epochs": trainer.current_epoch,
            "launch_to_first_step_s": task.launch_to_first_step_s,
            "units": "scores are fractions (0-1); tables and logs show them in percent",
        },
        METRICS_FILE,
    )
    summarize_training(trainer, monitoring, metric, best_value, metrics_path)
    return best_value


def summarize_training(trainer: pl.Trainer, monitoring, metric: str, best_value: float, metrics_path: Path):
    """Where everything is and how it went, as the last lines of a training run."""
    training_log = next((c for c in trainer.callbacks if isinstance(c, TrainingLog)), None)
    best_row = training_log.best(metric) if training_log else None
    took = f" in {duration(time.monotonic() - training_log.started)}" if training_log else ""
    best_epoch = f" at epoch {best_row['epoch']}" if best_row else ""
    epochs = f"{trainer.current_epoch} epochs"
    lines = [f"training finished{took}: {epochs}, best val {metric} {percent(best_value)}{best_epoch}"]
    if monitoring is not None and monitoring.best_model_path:
        lines.append(f"  best checkpoint: {monitoring.best_model_path}")
    last = last_checkpoint(trainer)
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


def last_checkpoint(trainer: pl.Trainer) -> str:
    return next(
        (c.last_model_path or c.best_model_path for c in trainer.checkpoint_callbacks if not c.monitor), ""
    )
