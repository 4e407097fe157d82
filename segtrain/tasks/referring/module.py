"""Referring segmentation's LightningModule: the mask of the one object an expression refers to ("the red
disc left of the square"), scored by overall IoU, mean IoU and precision at IoU 0.5-0.9 (Hu et al. 2016).

Items: ``{"image": uint8 CHW, "tokens": int64 [T], "mask": uint8 HW (1 the object, 0 the rest, 255
ignore), "meta": {"expression", ...}}`` (``segtrain.data.referring``). The model takes the normalised image
and the token ids and returns one logit per pixel. The vocabulary is built from the train split's
expressions when training starts, and travels in the config, so checkpoints and exports carry it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from segtrain.errors import SegtrainError
from segtrain.inference import to_original_size
from segtrain.metrics import referring_scores
from segtrain.tasks.module import ExportSpec, TaskModule
from segtrain.visualize import blend, captioned


class ReferringSegmentation(TaskModule):
    epoch_metrics = ("overall_IoU", "mean_IoU")

    def __init__(
        self, model: nn.Module, loss: nn.Module, vocabulary: list[str], max_length: int, **arguments
    ):
        super().__init__(model, **arguments)
        self.loss = loss
        self.vocabulary = list(vocabulary)
        self.max_length = max_length
        self.threshold = float(self.inference.get("mask_threshold", 0.5))
        #: Per stage, [2, N] intersections and unions of the expressions scored so far on this rank.
        self.overlaps: dict[str, list[torch.Tensor]] = {"val": [], "test": []}

    @classmethod
    def from_config(cls, cfg: DictConfig, **task_arguments) -> ReferringSegmentation:
        if cfg.data.get("vocabulary") is None:
            raise SegtrainError(
                "data.vocabulary is null: `segtrain train` builds it from the train split before the model; "
                "eval, predict and export take it from the checkpoint (ckpt=...)"
            )
        return super().from_config(
            cfg,
            loss=instantiate(cfg.loss),
            vocabulary=list(cfg.data.vocabulary),
            max_length=int(cfg.data.max_length),
            **task_arguments,
        )

    @property
    def unlabelled_batch_hint(self) -> str:
        return f"every pixel is ignore_index={self.ignore_index}, so the loss is undefined: check the masks"

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.run_model(self.normalize(image), tokens)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"], batch["tokens"]), batch["mask"])
        self.watch_nonfinite(loss, (batch["mask"] == self.ignore_index).all())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        """The loss of one step as a hand-written loop computes it (``segtrain bench``'s reference)."""
        image = self.normalize(batch["image"].to(device, non_blocking=True))
        tokens = batch["tokens"].to(device, non_blocking=True)
        return self.loss(model(image, tokens), batch["mask"].to(device, non_blocking=True))

    def evaluate_batch(self, batch: dict, stage: str) -> torch.Tensor:
        logits = to_original_size(self(batch["image"], batch["tokens"]).float(), batch["meta"])
        predicted = torch.sigmoid(logits[:, 0]) > self.threshold
        mask = batch["mask"]
        labelled, target = mask != self.ignore_index, mask == 1
        intersection = (predicted & target & labelled).flatten(1).sum(1)
        union = ((predicted | target) & labelled).flatten(1).sum(1)
        self.overlaps[stage].append(torch.stack([intersection, union]))
        return predicted

    def reset_scores(self, stage: str) -> None:
        self.overlaps[stage] = []

    def epoch_scores(self, stage: str) -> dict:
        overlaps = torch.cat(self.overlaps[stage], 1).cpu() if self.overlaps[stage] else torch.zeros(2, 0)
        self.reset_scores(stage)
        overlaps = torch.cat(self.gather(overlaps), 1)
        result = referring_scores(overlaps[0], overlaps[1])
        # Every rank holds the same numbers: sync_dist averages equal values and keeps Lightning quiet.
        self.log(f"{stage}/overall_IoU", result["overall_IoU"], prog_bar=True, sync_dist=True)
        self.log_dict(
            {f"{stage}/{key}": result[key] for key in ("mean_IoU", "precision@0.5", "precision@0.9")},
            sync_dist=True,
        )
        return result

    def metadata(self) -> dict:
        return {**super().metadata(), "vocabulary": self.vocabulary, "max_length": self.max_length}

    def prediction_writer(self, directory: Path, dataset) -> pl.Callback:
        return ReferringPredictionWriter(directory, self.palette)

    def exported_module(self) -> nn.Module:
        """What export writes and predict runs: the model, on normalised images and token ids."""
        return self.model.eval()

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        channels = self.description.in_channels
        generator = torch.Generator().manual_seed(0)
        samples = []
        for batch, size in zip((1, 2), sizes):
            tokens = torch.randint(1, len(self.vocabulary), (batch, self.max_length), generator=generator)
            tokens[:, : self.max_length // 2] = 0  # left padding, as expressions are encoded
            samples.append((torch.randn(batch, channels, *size, generator=generator), tokens))
        return ExportSpec(
            self.exported_module(),
            samples,
            input_names=["image", "tokens"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "tokens": {0: "batch"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            input=(
                "image float32 [batch, C, H, W], RGB, (x / 255 - mean) / std; tokens int64 "
                "[batch, max_length]: the expression's word ids in vocabulary, left-padded with 0, unknown "
                "words 1"
            ),
            output="logits [batch, 1, H, W]: sigmoid > inference.mask_threshold is the referred object",
        )

    def overlay_panels(self, batch: dict, preds: torch.Tensor, count: int, alpha: float) -> list[np.ndarray]:
        """Image | ground truth | prediction, each captioned with the expression."""
        shown = (
            to_original_size(batch["image"][:count].float(), batch["meta"][:count]).round().to(torch.uint8)
        )
        panels = []
        for image, truth, pred, meta in zip(
            shown.permute(0, 2, 3, 1).cpu().numpy(),
            batch["mask"][:count].cpu().numpy(),
            preds[:count].cpu().numpy().astype(np.uint8),
            batch["meta"][:count],
        ):
            row = np.concatenate(
                [
                    image,
                    blend(image, (truth == 1).astype(np.uint8), self.palette, alpha),
                    blend(image, pred, self.palette, alpha),
                ],
                axis=1,
            )
            panels.append(captioned(row, meta["expression"]))
        return panels


class ReferringPredictionWriter(pl.Callback):
    """``eval save_predictions=true``: each evaluated prediction as a 0/255 mask at its image's own size,
    and ``expressions.json`` saying which expression each answers."""

    def __init__(self, directory: Path, palette: list[list[int]]):
        self.directory = Path(directory)
        self.palette = palette
        self.written: list[dict] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.directory.mkdir(parents=True, exist_ok=True)
        for pred, meta in zip(outputs.to(torch.uint8).cpu().numpy(), batch["meta"]):
            height, width = meta["size"]
            Image.fromarray(pred[:height, :width] * 255).save(self.directory / f"{meta['name']}.png")
            self.written.append({"name": meta["name"], "expression": meta["expression"]})

    def on_test_end(self, trainer, pl_module) -> None:
        (self.directory / "expressions.json").write_text(json.dumps(self.written, indent=1))
