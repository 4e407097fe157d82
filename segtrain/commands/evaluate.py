"""``segtrain eval ckpt=PATH``: the checkpoint's task scores it on ``data.split`` and writes its report."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from segtrain.commands.loading import command_overrides, load_task
from segtrain.runtime.trainer import build_trainer, output_dir, write_metrics
from segtrain.tasks import build_datamodule, task_spec

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    task, merged = load_task(cfg, command_overrides())
    spec = task_spec(merged)
    datamodule = build_datamodule(merged)
    trainer = build_trainer(merged, logger=False)
    if cfg.get("save_predictions"):
        predictions = output_dir(cfg) / "predictions"
        trainer.callbacks.append(task.prediction_writer(predictions, datamodule.build("eval")))
    root, split = merged.data.get("root"), merged.data.split
    images = len(datamodule.build("eval"))
    scoring = spec.describe_scoring(merged)
    log.info(
        "evaluating ckpt=%s on data=%s root=%s split=%s: %d images, %s",
        cfg.ckpt,
        merged.data.get("name", ""),
        root,
        split,
        images,
        scoring,
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
        "inference": spec.inference_settings(merged),
    }
    title = (
        f"{merged.data.get('name', '')} root={root} split={split} ({images} images, "
        f"{spec.count_scored(result)}), {scoring}; ckpt={cfg.ckpt}"
    )
    log.info("%s", spec.score_table(result, title))
    log.info("%d images in %.1f s (%.1f images/s, loading included)", images, seconds, images / seconds)
    report = spec.write_report(result, output_dir(cfg), title=f"{result['data']} {split}")
    log.info("metrics written to %s, chart to %s", write_metrics(cfg, result, "metrics.json"), report)
    if cfg.get("save_predictions"):
        log.info("predictions written to %s (%s)", predictions, spec.describe_predictions(merged))
    return result
