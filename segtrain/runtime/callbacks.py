"""Callbacks that the callbacks/ config group (and eval) add to the Trainer."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from segtrain.metrics import percent
from segtrain.plots import training_curves

log = logging.getLogger("segtrain")


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class ProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's Rich bar with epochs counted from 1, as every table and log line counts them, and
    scores in percent."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            return f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"
        return f"Epoch {current_epoch + 1}"

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        return {
            key: percent(float(value)) if key.startswith(("val/", "test/")) else value
            for key, value in metrics.items()
        }


class TrainingLog(pl.Callback):
    """What a run reports as it goes, on a terminal or not: one line per epoch (loss, lr, throughput, val
    the task's val scores, ETA), and where stdout is not a terminal (CI, nohup, SLURM) one line every
    ``every_n_steps`` steps, through the ``segtrain`` logger, which also writes the run's log file. At the
    end of training it draws ``curves.png`` in the run directory. The history travels in checkpoints, so a
    resumed run's curves start at epoch 1.

    The epoch's loss is summed on the device and read once per epoch: no step waits for the GPU.
    """

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps
        self.history: list[dict] = []
        self.step_lines = not sys.stdout.isatty()
        self.started = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = time.monotonic()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_started = time.monotonic()
        self.train_seconds, self.images, self.batches, self.loss_sum = 0.0, 0, 0, None
        self.scores = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.batches += 1
        self.images += len(batch["image"])
        self.train_seconds = time.monotonic() - self.epoch_started
        step = trainer.global_step
        if (
            self.step_lines
            and self.every_n_steps
            and step % self.every_n_steps == 0
            and trainer.is_global_zero
        ):
            log.info(
                "%s  step %d  loss %.4f  lr %.2e  %.1f images/s",
                self._epoch(trainer),
                step,
                float(loss),
                self._lr(trainer),
                self.images / max(self.train_seconds, 1e-9),
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self.scores = getattr(pl_module, "val_scores", None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.batches:
            return
        row = {
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
            "loss": float(self.loss_sum) / self.batches,
            "lr": self._lr(trainer),
            "images_per_s": self.images / max(self.train_seconds, 1e-9),
            "seconds": time.monotonic() - self.epoch_started,
        }
        if self.scores is not None:
            row.update({key: self.scores[key] for key in pl_module.epoch_metrics})
        self.history.append(row)
        if trainer.is_global_zero:
            validation = "".join(
                f"  val {key} {percent(row[key])}" for key in pl_module.epoch_metrics if key in row
            )
            log.info(
                "%s  loss %.4f  lr %.2e  %.1f images/s%s  (%s this epoch, ETA %s)",
                self._epoch(trainer),
                row["loss"],
                row["lr"],
                row["images_per_s"],
                validation,
                duration(row["seconds"]),
                self._eta(trainer),
            )

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.history:
            curves = Path(trainer.default_root_dir) / "curves.png"
            training_curves(self.history, curves, pl_module.epoch_metrics)

    def best(self, metric: str) -> dict | None:
        """The epoch with the best val ``metric``."""
        scored = [row for row in self.history if not math.isnan(row.get(metric, math.nan))]
        return max(scored, key=lambda row: row[metric]) if scored else None

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    @staticmethod
    def _epoch(trainer) -> str:
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{total}"

    @staticmethod
    def _lr(trainer) -> float:
        return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan

    def _eta(self, trainer) -> str:
        done = [row["seconds"] for row in self.history[-3:]]
        per_epoch = sum(done) / len(done)
        if trainer.max_steps and trainer.max_steps > 0:
            steps_per_epoch = max(self.batches // max(trainer.accumulate_grad_batches, 1), 1)
            remaining = (trainer.max_steps - trainer.global_step) / steps_per_epoch
        else:
            remaining = (trainer.max_epochs or 0) - (trainer.current_epoch + 1)
        return duration(max(remaining, 0) * per_epoch)


class ModelSummary(pl.callbacks.ModelSummary):
    """Lightning's layer table and totals, with FLOPs only when they were counted: Lightning counts them
    only for a model with an ``example_input_array`` and otherwise prints "Total FLOPs: 0"."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        modes,
        total_flops,
        **_,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        widths = [max(len(name), *(len(str(v)) for v in values)) for name, values in columns]
        rows = [[name for name, _ in columns], *zip(*(values for _, values in columns))]
        lines = ["  ".join(f"{str(cell):<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        totals = [
            f"{get_human_readable_count(int(trainable_parameters))} trainable parameters of "
            f"{get_human_readable_count(int(total_parameters))}, {get_formatted_model_size(model_size)} MB",
            f"modules in train mode: {modes['train']}, in eval mode: {modes['eval']}",
        ]
        if total_flops:
            totals.append(f"FLOPs per forward pass: {get_human_readable_count(int(total_flops))}")
        rank_zero_info("\n".join(["", *lines, *totals]))


class PredictionOverlays(pl.Callback):
    """Image | ground truth | prediction panels of the first validation batch (the task draws them):
    saved as ``overlays/epoch_NNN.png`` in the run directory whatever the logger, and also logged to wandb
    and TensorBoard when they are on (2D images; volumes are skipped)."""

    def __init__(self, num_images: int = 4, alpha: float = 0.5):
        self.num_images = num_images
        self.alpha = alpha

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        panels = pl_module.overlay_panels(batch, outputs, self.num_images, self.alpha)
        if not panels:
            return
        directory = Path(trainer.default_root_dir) / "overlays"
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(panels, axis=0)).save(
            directory / f"epoch_{trainer.current_epoch + 1:03d}.png"
        )
        names = [meta.get("name", str(i)) for i, meta in enumerate(batch["meta"][: self.num_images])]
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/overlays", panels, step=trainer.global_step, caption=names)
            else:
                logger.experiment.add_images(
                    "val/overlays", np.stack(panels), trainer.global_step, dataformats="NHWC"
                )
