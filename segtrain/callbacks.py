"""Callbacks that the callbacks/ config group (and eval) add to the Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from segtrain.inference import to_original_size
from segtrain.visualize import blend


class PredictionOverlays(pl.Callback):
    """Logs image | ground truth | prediction overlays of the first validation batch to wandb / TensorBoard
    (2D images; volumes are skipped)."""

    def __init__(self, num_images: int = 4, alpha: float = 0.5):
        self.num_images = num_images
        self.alpha = alpha

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if (
            batch_idx != 0
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or batch["image"].ndim != 4
        ):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        if not loggers:
            return
        # Predictions and masks are at each image's own size (inference.score_resolution).
        shown = batch["image"][: self.num_images].float()
        images = to_original_size(shown, batch["meta"][: self.num_images]).round().to(torch.uint8)
        images = images.permute(0, 2, 3, 1).cpu().numpy()
        masks = batch["mask"][: self.num_images].cpu().numpy()
        preds = outputs[: self.num_images].cpu().numpy()
        palette = pl_module.palette
        panels = [
            np.concatenate(
                [
                    np.repeat(img, 3, -1) if img.shape[-1] == 1 else img,
                    blend(img, np.where(gt == pl_module.ignore_index, 0, gt), palette, self.alpha),
                    blend(img, pred, palette, self.alpha),
                ],
                axis=1,
            )
            for img, gt, pred in zip(images, masks, preds)
        ]
        names = [meta.get("name", str(i)) for i, meta in enumerate(batch["meta"][: self.num_images])]
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/overlays", panels, step=trainer.global_step, caption=names)
            else:
                logger.experiment.add_images(
                    "val/overlays", np.stack(panels), trainer.global_step, dataformats="NHWC"
                )


class PredictionWriter(pl.Callback):
    """Writes each evaluated prediction, at its image's own size, in the dataset's published encoding
    (``SegmentationDataset.save_prediction``): Cityscapes labelIds, ADE20K's shifted ids, VOC's palette
    PNGs, NIfTI volumes on the label's grid, so the official evaluation tools read them as they read
    ground truth."""

    def __init__(self, directory: str | Path, dataset, palette: Sequence[Sequence[int]]):
        self.directory = Path(directory)
        self.dataset = dataset
        self.palette = palette

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.directory.mkdir(parents=True, exist_ok=True)
        for pred, meta in zip(outputs.to(torch.uint8).cpu().numpy(), batch["meta"]):
            own_size = tuple(slice(0, n) for n in meta["size"])
            self.dataset.save_prediction(pred[own_size], meta, self.directory, self.palette)
