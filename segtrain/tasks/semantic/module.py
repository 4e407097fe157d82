"""Semantic segmentation's LightningModule: one class per pixel, scored by a confusion matrix (mIoU, Dice).

Items: ``{"image": uint8 CHW, "mask": uint8 HW (ignore_index 255), "meta": {...}}``; predictions are
mapped back onto each image's own grid before they are scored or written (``inference.score_resolution``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_warn

from segtrain.inference import class_ids, predict_probs, to_original_size
from segtrain.metrics import ConfusionMatrix, scores
from segtrain.tasks.module import ExportSpec, TaskModule
from segtrain.tasks.semantic.adversarial import Adversary
from segtrain.visualize import blend


class SemanticSegmentation(TaskModule):
    epoch_metrics = ("mIoU", "mDice")

    def __init__(
        self, model: nn.Module, loss: nn.Module, adversary: Adversary | None = None, **task_arguments
    ):
        super().__init__(model, **task_arguments)
        self.loss = loss
        #: ``adversarial=...``: the discriminator trained against the model (Luc et al. 2016), with its own
        #: optimizer; both step in ``training_step``.
        self.adversary = adversary
        self.automatic_optimization = adversary is None
        self.register_buffer("discriminator_hits", torch.zeros(2), persistent=False)
        self.val_confmat = ConfusionMatrix(len(self.classes), self.ignore_index)
        self.test_confmat = ConfusionMatrix(len(self.classes), self.ignore_index)

    @classmethod
    def from_config(cls, cfg: DictConfig, **task_arguments) -> SemanticSegmentation:
        adversarial = cfg.get("adversarial")
        return super().from_config(
            cfg,
            loss=instantiate(cfg.loss),
            adversary=instantiate(adversarial) if adversarial else None,
            **task_arguments,
        )

    @property
    def unlabelled_batch_hint(self) -> str:
        return (
            f"every pixel is ignore_index={self.ignore_index}, so the loss is undefined: the label encoding "
            "(data.label_map, data.color_map, data.reduce_zero_label) does not fit the masks. Run "
            "segtrain check-data with the same data overrides; it names the values found and the fix"
        )

    def forward(self, image: torch.Tensor, superpixels: torch.Tensor | None = None):
        # The graph models take the superpixels the data workers computed (data.superpixels).
        extra = {} if superpixels is None else {"superpixels": superpixels}
        return self.run_model(self.normalize(image), **extra)

    def predict_probs(self, image: torch.Tensor) -> torch.Tensor:
        return predict_probs(self.run_model, self.normalize(image), image=image, **self.inference)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.adversary is not None:
            return self.adversarial_step(batch)
        loss = self.loss(self(batch["image"], batch.get("superpixels")), batch["mask"], batch.get("weight"))
        self.watch_nonfinite(loss, (batch["mask"] == self.ignore_index).all())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def adversarial_step(self, batch: dict) -> torch.Tensor:
        """One step of both networks from one backward pass (``Adversary.losses`` says why)."""
        model_optimizer, discriminator_optimizer = self.optimizers()
        image, mask = self.normalize(batch["image"]), batch["mask"]
        output = self.run_model(image)
        logits = output["out"] if isinstance(output, dict) else output
        segmentation = self.loss(output, mask, batch.get("weight"))
        discriminator, term, accuracy = self.adversary.losses(image, logits.float().softmax(1), mask)
        loss = segmentation + self.adversary.weight * term
        self.watch_nonfinite(loss, (mask == self.ignore_index).all())
        model_optimizer.zero_grad()
        discriminator_optimizer.zero_grad()
        self.manual_backward(loss + discriminator)
        model_optimizer.step()
        # The plain optimizer: Lightning's wrapper would count a second step per batch in global_step (and so
        # in max_steps and the logging interval). Float16 loss scaling, which would need the wrapper, is
        # refused with adversarial training (``validate``).
        discriminator_optimizer.optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.discriminator_hits += torch.stack([accuracy.detach(), torch.ones_like(accuracy)])
        size = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict(
            {"train/segmentation_loss": segmentation, "train/discriminator_loss": discriminator},
            batch_size=size,
        )
        self.log("train/discriminator_accuracy", accuracy, prog_bar=True, batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.adversary is None:
            return
        accuracy, steps = (float(v) for v in self.discriminator_hits)
        self.discriminator_hits.zero_()
        if steps and accuracy / steps >= 1.0:
            rank_zero_warn(
                f"the discriminator told every ground truth from every prediction in epoch "
                f"{self.current_epoch} (accuracy 100%): with adversarial.input={self.adversary.input} it can "
                "win by the label maps' values alone (one-hot against soft), the shortcut Luc et al. 2016 "
                "describe, and then it teaches the model nothing. Use adversarial=product or "
                "adversarial=scaling."
            )

    def configure_optimizers(self):
        if self.adversary is None:
            return super().configure_optimizers()
        optimizer, scheduler = self.model_optimization()
        discriminator = self.adversary.optimizer_factory(params=list(self.adversary.parameters()))
        return [optimizer, discriminator], [scheduler] if scheduler else []

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        """The loss of one step as a hand-written loop computes it (``segtrain bench``'s reference)."""
        image = self.normalize(batch["image"].to(device, non_blocking=True))
        return self.loss(model(image), batch["mask"].to(device, non_blocking=True))

    def evaluate_batch(self, batch: dict, stage: str) -> torch.Tensor:
        preds = class_ids(to_original_size(self.predict_probs(batch["image"]), batch["meta"]))
        self.confmat(stage).update(preds, batch["mask"])
        return preds

    def confmat(self, stage: str) -> ConfusionMatrix:
        return self.val_confmat if stage == "val" else self.test_confmat

    def reset_scores(self, stage: str) -> None:
        self.confmat(stage).reset()

    def epoch_scores(self, stage: str) -> dict:
        result = scores(self.confmat(stage).compute(), self.classes)
        self.reset_scores(stage)
        # The confusion matrix is already summed over ranks, so every rank holds the same numbers;
        # sync_dist averages equal values (a few scalars once per epoch) and keeps Lightning quiet.
        self.log(f"{stage}/mIoU", result["mIoU"], prog_bar=True, sync_dist=True)
        self.log_dict(
            {f"{stage}/{key}": result[key] for key in ("mDice", "aAcc", "mAcc", "fwIoU")}, sync_dist=True
        )
        return result

    def prediction_writer(self, directory, dataset) -> pl.Callback:
        """``save_predictions=true``: each prediction in the dataset's published encoding, at its size."""
        return PredictionWriter(directory, dataset, self.palette)

    def exported_module(self) -> nn.Module:
        """What export writes and predict runs: the model, on normalised images."""
        return self.model.eval()

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        channels = self.description.in_channels
        # Seeded, as every task's: the same checkpoint gets the same verdict each time it is exported.
        generator = torch.Generator().manual_seed(0)
        return ExportSpec(
            self.exported_module(),
            [torch.randn(batch, channels, *size, generator=generator) for batch, size in zip((1, 2), sizes)],
            input="float32 [batch, C, H, W], RGB, (x / 255 - mean) / std",
            output="logits [batch, num_classes, H, W]",
        )

    def overlay_panels(self, batch: dict, preds: torch.Tensor, count: int, alpha: float) -> list[np.ndarray]:
        """Image | ground truth | prediction, at each image's own size (2D images; volumes draw none)."""
        if batch["image"].ndim != 4:
            return []
        shown = batch["image"][:count].float()
        images = to_original_size(shown, batch["meta"][:count]).round().to(torch.uint8)
        images = images.permute(0, 2, 3, 1).cpu().numpy()
        masks = batch["mask"][:count].cpu().numpy()
        return [
            np.concatenate(
                [
                    np.repeat(img, 3, -1) if img.shape[-1] == 1 else img,
                    blend(img, np.where(gt == self.ignore_index, 0, gt), self.palette, alpha),
                    blend(img, pred, self.palette, alpha),
                ],
                axis=1,
            )
            for img, gt, pred in zip(images, masks, preds[:count].cpu().numpy())
        ]


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
