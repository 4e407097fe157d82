"""The foreground task's LightningModule: cross-entropy on two classes, scored by the foreground's IoU and
Dice summed over every pixel of the split (and over ranks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from segtrain.tasks.module import ExportSpec, TaskModule
from segtrain.visualize import blend


class ForegroundSegmentation(TaskModule):
    epoch_metrics = ("foreground_IoU", "foreground_Dice")

    def __init__(self, model: nn.Module, loss: nn.Module, **task_arguments):
        super().__init__(model, **task_arguments)
        self.loss = loss
        self.threshold = float(self.inference["threshold"])
        #: Intersection, union, predicted + true foreground pixels, labelled pixels.
        self.register_buffer("counts", torch.zeros(4, dtype=torch.float64), persistent=False)

    @classmethod
    def from_config(cls, cfg: DictConfig, **task_arguments) -> ForegroundSegmentation:
        return super().from_config(cfg, loss=instantiate(cfg.loss), **task_arguments)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.run_model(self.normalize(image))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.watch_nonfinite(loss, (batch["mask"] == self.ignore_index).all())
        self.log("train/loss", loss, batch_size=batch["image"].shape[0])
        return loss

    def evaluate_batch(self, batch: dict, stage: str) -> torch.Tensor:
        predicted = self(batch["image"]).softmax(1)[:, 1] > self.threshold
        labelled = batch["mask"] != self.ignore_index
        truth = (batch["mask"] == 1) & labelled
        predicted = predicted & labelled
        self.counts += torch.stack(
            [
                (predicted & truth).sum(),
                (predicted | truth).sum(),
                predicted.sum() + truth.sum(),
                labelled.sum(),
            ]
        ).double()
        return predicted

    def reset_scores(self, stage: str) -> None:
        self.counts.zero_()

    def epoch_scores(self, stage: str) -> dict:
        counts = self.all_gather(self.counts).reshape(-1, 4).sum(0)
        self.reset_scores(stage)
        intersection, union, sizes, pixels = (float(value) for value in counts)
        result = {
            "foreground_IoU": intersection / union if union else 1.0,
            "foreground_Dice": 2 * intersection / sizes if sizes else 1.0,
            "pixels": int(pixels),
        }
        self.log_dict({f"{stage}/{key}": result[key] for key in self.epoch_metrics}, sync_dist=True)
        return result

    def prediction_writer(self, directory: Path, dataset) -> pl.Callback:
        return ForegroundWriter(directory)

    def exported_module(self) -> nn.Module:
        return self.model.eval()

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        channels = self.description.in_channels
        return ExportSpec(
            self.exported_module(),
            [torch.randn(batch, channels, *size) for batch, size in zip((1, 2), sizes)],
            input="float32 [batch, C, H, W], (x / 255 - mean) / std",
            output="logits [batch, 2, H, W]: background, foreground",
        )

    def overlay_panels(self, batch: dict, outputs, count: int, alpha: float) -> list:
        images = batch["image"][:count].permute(0, 2, 3, 1).cpu().numpy()
        return [
            blend(image, mask.cpu().numpy().astype(np.uint8), self.palette, alpha)
            for image, mask in zip(images, outputs[:count])
        ]

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        image = self.normalize(batch["image"].to(device))
        return self.loss(model(image), batch["mask"].to(device))


class ForegroundWriter(pl.Callback):
    """``eval save_predictions=true``: 0/255 PNG masks, numbered in evaluation order."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.written = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.directory.mkdir(parents=True, exist_ok=True)
        for mask in outputs.cpu().numpy():
            Image.fromarray(mask.astype(np.uint8) * 255).save(self.directory / f"{self.written:05d}.png")
            self.written += 1
