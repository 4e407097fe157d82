"""Instance segmentation's LightningModule: a box, a class, a score and a mask per object, scored by
COCO's box and mask AP.

Items: ``{"image": uint8 [C,H,W], "boxes": float [N,4] xyxy, "labels": int64 [N] (1..K), "masks": uint8
[N,H,W], "meta": {"image_id", "name", "size"}}``, batched as lists. The model is a torchvision-style
detector (``segtrain.models.mask_rcnn``): it takes images in 0-1, normalises and resizes them itself,
returns its losses while training and per-image detections at each image's own size otherwise.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed
import torch.nn as nn
from PIL import Image

from segtrain.errors import SegtrainError
from segtrain.metrics import coco_results, coco_scores
from segtrain.tasks.module import ExportSpec, TaskModule


class InstanceSegmentation(TaskModule):
    epoch_metrics = ("box_AP", "mask_AP")

    def __init__(self, model: nn.Module, **task_arguments):
        super().__init__(model, **task_arguments)
        #: This rank's COCO results and scored image ids, for the epoch's COCOeval.
        self.results: list[dict] = []
        self.scored_images: list[int] = []

    @staticmethod
    def to_unit_range(images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [image.float() / 255 for image in images]

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return self.run_model(self.to_unit_range(images))

    @staticmethod
    def targets(batch: dict) -> list[dict]:
        """The detector's training targets of a batch."""
        return [
            {"boxes": boxes, "labels": labels, "masks": masks}
            for boxes, labels, masks in zip(batch["boxes"], batch["labels"], batch["masks"])
        ]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.run_model(self.to_unit_range(batch["image"]), self.targets(batch))
        loss = sum(losses.values())
        # Images without objects train the detector's background: only a non-finite loss is a fault.
        self.watch_nonfinite(loss, torch.zeros((), dtype=torch.bool, device=loss.device))
        size = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=size)
        return loss

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        """The loss of one step as a hand-written loop computes it (``segtrain bench``'s reference)."""
        moved = {
            key: [tensor.to(device, non_blocking=True) for tensor in batch[key]]
            for key in ("image", "boxes", "labels", "masks")
        }
        return sum(model(self.to_unit_range(moved["image"]), self.targets(moved)).values())

    @staticmethod
    def check_sizes(batch: dict) -> None:
        """Evaluation images keep their own size: the detector resizes them itself, and scores are taken
        at each image's size."""
        for image, meta in zip(batch["image"], batch["meta"]):
            if tuple(image.shape[-2:]) != tuple(meta["size"]):
                raise SegtrainError(
                    f"data.val_transforms change the size of image {meta['name']} ({tuple(meta['size'])} -> "
                    f"{tuple(image.shape[-2:])}); the evaluation scores each image at its own size. Leave "
                    "resizing to the detector (model.min_size, model.max_size) and data.val_transforms empty"
                )

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict]:
        self.check_sizes(batch)
        outputs = self(batch["image"])
        for output, meta in zip(outputs, batch["meta"]):
            self.results += coco_results(
                output, meta["image_id"], self.description.category_ids, self.inference["mask_threshold"]
            )
            self.scored_images.append(meta["image_id"])
        return outputs

    def reset_scores(self, stage: str) -> None:
        self.results, self.scored_images = [], []

    def epoch_scores(self, stage: str) -> dict:
        gathered = self.gather((self.results, self.scored_images))
        self.reset_scores(stage)
        results, images, seen = [], [], set()
        # An image scored by two ranks (a sampler that pads) counts once.
        for rank_results, rank_images in gathered:
            fresh = set(rank_images) - seen
            results += [result for result in rank_results if result["image_id"] in fresh]
            images += sorted(fresh)
            seen |= fresh
        dataset = self.trainer.datamodule.build("val" if stage == "val" else "eval")
        result = coco_scores(
            dataset.ground_truth(), results, sorted(set(images)), self.classes, self.description.category_ids
        )
        self.log_dict(
            {f"{stage}/{key}": result[key] for key in self.epoch_metrics if key in result},
            prog_bar=True,
            sync_dist=True,
        )
        return result

    def prediction_writer(self, directory: Path, dataset) -> pl.Callback:
        return InstancePredictionWriter(
            directory, self.classes, self.description.category_ids, self.inference
        )

    def exported_module(self) -> nn.Module:
        """What export writes and predict runs (``DetectorExport``)."""
        return DetectorExport(self.model).eval()

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        """Batch 1, dynamic height and width, and a dynamic number of detections (none included): the
        TorchScript-based ONNX exporter traces torchvision's detectors; torch.export cannot yet."""
        channels = self.description.in_channels
        detections = {0: "detections"}
        generator = torch.Generator().manual_seed(0)
        return ExportSpec(
            self.exported_module(),
            [torch.rand(1, channels, *size, generator=generator) * 255 for size in sizes],
            output_names=list(DETECTIONS),
            dynamic_axes={
                "image": {2: "height", 3: "width"},
                "boxes": detections,
                "labels": detections,
                "scores": detections,
                "masks": {0: "detections", 2: "height", 3: "width"},
            },
            onnx_exporters=("torchscript",),
            torchscript="script",
            align=partial(
                align_detections,
                score_thresh=self.model.roi_heads.score_thresh,
                limit=self.model.roi_heads.detections_per_img,
            ),
            input="float32 [1, C, H, W], RGB, 0-255 (the detector normalises and resizes it itself)",
            output=(
                "boxes [N, 4] xyxy pixels, labels [N] (classes[label - 1]), scores [N], masks [N, 1, H, W] "
                "probabilities; every detection above model.box_score_thresh"
            ),
        )

    def overlay_panels(self, batch: dict, outputs: list[dict], count: int, alpha: float) -> list[np.ndarray]:
        """Image | ground truth | detections above ``inference.score_threshold``, one row per image."""
        panels = []
        for image, boxes, labels, masks, output in list(
            zip(batch["image"], batch["boxes"], batch["labels"], batch["masks"], outputs)
        )[:count]:
            truth = draw_instances(
                image, boxes, labels, masks.bool(), None, self.classes, self.palette, alpha
            )
            predicted = draw_detections(image, output, self.classes, self.palette, self.inference, alpha)
            original = image.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
            panels.append(np.concatenate([original, truth, predicted], axis=1))
        return panels


#: What a detector returns per image, in the order export writes it.
DETECTIONS = ("boxes", "labels", "scores", "masks")


class DetectorExport(nn.Module):
    """A detector for one image: float [1, C, H, W] in 0-255 -> boxes, labels, scores, masks (the graph
    ``segtrain export`` writes, TorchScript and ONNX alike)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model([image[0] / 255])
        # Scripted, torchvision's detectors return (losses, detections).
        detections = outputs[1][0] if torch.jit.is_scripting() else outputs[0]
        return detections["boxes"], detections["labels"], detections["scores"], detections["masks"]


#: Scores this close to a side's cut are a tie there: ONNX and PyTorch, a few 1e-6 apart, may keep
#: different detections at it.
TIED_AT_CUT = 1e-4

#: Boxes further apart than this (pixels, any coordinate) are different detections.
SAME_BOX = 1.0


def align_detections(
    reference: tuple, exported: tuple, score_thresh: float, limit: int
) -> tuple[tuple, tuple]:
    """The detections both sides kept, in PyTorch's order: each PyTorch detection is paired with the
    unclaimed exported one of its label with the nearest box (equal scores come out of the two sorts in
    either order). A detection only one side kept must be tied with the other side's cut (its lowest score
    when it kept ``limit`` detections, else ``score_thresh``); otherwise both are returned whole, and the
    comparison fails on them."""
    boxes, labels = reference[0].float(), reference[1]
    distance = (boxes[:, None, :] - exported[0][None, :, :].float()).abs().amax(-1)
    distance[labels[:, None] != exported[1][None, :]] = float("inf")
    kept, order = [], []
    for index, row in enumerate(distance):
        row[order] = float("inf")
        if len(row) and row.min() <= SAME_BOX:
            kept.append(index)
            order.append(int(row.argmin()))
    sides = ((reference[2], kept), (exported[2], order))
    for (scores, paired), (other, _) in (sides, sides[::-1]):
        cut = other.min() if len(other) >= limit else score_thresh
        lone = scores[[i for i in range(len(scores)) if i not in paired]]
        if len(lone) and (lone - cut).abs().max() > TIED_AT_CUT:
            return reference, exported
    # Outputs after the detections (Panoptic FPN's semantic logits) are per image: compared as they are.
    count = len(DETECTIONS)
    return (
        tuple(output[kept] for output in reference[:count]) + tuple(reference[count:]),
        tuple(output[order] for output in exported[:count]) + tuple(exported[count:]),
    )


def draw_instances(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    scores: torch.Tensor | None,
    classes: list[str],
    palette: list[list[int]],
    alpha: float = 0.5,
) -> np.ndarray:
    """HxWx3 uint8: each instance's mask in its own colour (neighbours of one class stay apart), its box in
    its class's colour, and a "class score" caption."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from segtrain.resolvers import distinct_palette

    canvas = image.detach().cpu().expand(3, -1, -1).to(torch.uint8)
    labels = labels.detach().cpu().tolist()
    if len(labels):
        instance_colors = [tuple(color) for color in distinct_palette(len(labels))]
        # Where masks overlap, the first (the highest-scoring detection) is shown: torchvision blends
        # overlapping masks into a dark grey.
        masks = masks.detach().cpu().bool()
        shown = masks & (masks.int().cumsum(0) - masks.int() == 0)
        canvas = draw_segmentation_masks(canvas, shown, alpha=alpha, colors=instance_colors)
        names = [classes[label - 1] for label in labels]
        if scores is not None:
            names = [f"{name} {score:.2f}" for name, score in zip(names, scores.detach().cpu().tolist())]
        class_colors = [tuple(palette[label % len(palette)]) for label in labels]
        canvas = draw_bounding_boxes(canvas, boxes.detach().cpu(), labels=names, colors=class_colors, width=1)
    return canvas.permute(1, 2, 0).numpy()


def draw_detections(
    image: torch.Tensor,
    output: dict,
    classes: list[str],
    palette: list[list[int]],
    inference: dict,
    alpha=0.5,
) -> np.ndarray:
    """``draw_instances`` of the detections above ``inference.score_threshold``, masks cut at
    ``inference.mask_threshold``."""
    keep = output["scores"] > inference["score_threshold"]
    masks = output["masks"][keep, 0] > inference["mask_threshold"]
    boxes, labels, scores = output["boxes"][keep], output["labels"][keep], output["scores"][keep]
    return draw_instances(image, boxes, labels, masks, scores, classes, palette, alpha)


class InstancePredictionWriter(pl.Callback):
    """``eval save_predictions=true``: every detection as COCO results json (``detections.json``, what
    COCOeval and the COCO server read) and an overlay per image of those above the score threshold."""

    def __init__(self, directory: Path, classes: list[str], category_ids: list[int], inference: dict):
        self.directory = Path(directory)
        self.classes, self.category_ids = classes, category_ids
        self.inference = inference
        self.results: list[dict] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        overlays = self.directory / "overlays"
        overlays.mkdir(parents=True, exist_ok=True)
        for image, output, meta in zip(batch["image"], outputs, batch["meta"]):
            self.results += coco_results(
                output, meta["image_id"], self.category_ids, self.inference["mask_threshold"]
            )
            drawn = draw_detections(image, output, self.classes, pl_module.palette, self.inference)
            Image.fromarray(drawn).save(overlays / f"{meta['name']}.jpg", quality=90)

    def on_test_end(self, trainer, pl_module) -> None:
        (self.directory / "detections.json").write_text(json.dumps(self.results))
