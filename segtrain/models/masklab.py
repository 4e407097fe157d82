"""MaskLab: instance masks from a box detector's boxes, semantic segmentation and direction prediction.

Chen, Hermans, Papandreou, Schroff, Wang, Adam. "MaskLab: Instance Segmentation by Refining Object
Detection with Semantic and Direction Features", CVPR 2018. No public implementation exists; this one
follows the paper's Sec. 3:

- a Faster R-CNN detector (here on the ResNet-FPN trunk of ``segtrain.models.mask_rcnn``);
- from the stride-8 features, semantic segmentation logits (C+1 channels, background included) and
  direction logits: for each pixel of an object, the direction to its instance's centre, in 8 bins;
- per box, crop-and-resize of the semantic channel of the box's class, and direction pooling: the box's
  grid cells take the direction channel of the bin pointing from the cell to the box centre, assembling
  a map that is high where pixels point inward (as position-sensitive pooling assembles parts);
- ``distances`` > 1 also quantises the distance to the centre: each (direction, distance) pair is one
  channel. A pixel's distance is taken relative to its instance's farthest pixel, a cell's relative to
  the box's half diagonal (both ours; the paper's text could not be checked offline for its
  normalisation). The default, 1, quantises direction alone;
- the two are concatenated and a 1x1 convolution gives coarse mask logits, refined with a hypercolumn of
  lower-layer (stride-4) features by three 3x3 convolutions;
- losses: the detector's box losses, semantic cross-entropy, direction cross-entropy (on object pixels)
  and the refined mask's binary cross-entropy.

TorchScript: not supported (MaskLab's forward holds Python logic that torchvision's scriptable
``GeneralizedRCNN`` structure has no place for); ONNX export traces it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import faster_rcnn
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.ops import roi_align

from segtrain.models.blocks import ConvReLU
from segtrain.models.detection import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    StableSizeTransform,
    detector_options,
)


def direction_bins(dy: torch.Tensor, dx: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin (0..bins-1) of the direction (dy, dx), counter-clockwise from -pi."""
    angle = torch.atan2(dy, dx)
    return ((angle + math.pi) / (2 * math.pi / bins)).floor().long().clamp(0, bins - 1)


def direction_distance_bins(
    dy: torch.Tensor, dx: torch.Tensor, reach: torch.Tensor | float, directions: int, distances: int
) -> torch.Tensor:
    """The channel of (dy, dx): its direction bin times ``distances`` plus its distance bin, the distance
    |(dy, dx)| / ``reach`` cut into ``distances`` equal bins over [0, 1]."""
    distance = torch.sqrt(dy**2 + dx**2) / reach
    ring = (distance * distances).floor().long().clamp(0, distances - 1)
    return direction_bins(dy, dx, directions) * distances + ring


class MaskLab(faster_rcnn.FasterRCNN):
    """``forward(images: list of float [3,H,W] in 0-1, targets=None)``: the losses while training, else one
    dict per image (boxes, labels, scores, masks [N,1,H,W] probabilities), as torchvision's detectors.
    ``num_classes`` counts the background."""

    task = "instance"

    def __init__(
        self,
        num_classes: int = 91,
        backbone: dict | None = None,
        variant: str = "v1",
        fpn_channels: int = 256,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        representation_size: int = 1024,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        box_score_thresh: float = 0.05,
        box_detections_per_img: int = 100,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        directions: int = 8,
        distances: int = 1,
        head_channels: int = 256,
        refine_channels: int = 128,
        mask_size: int = 28,
    ):
        super().__init__(
            **detector_options(
                num_classes,
                backbone,
                variant,
                fpn_channels,
                min_size,
                max_size,
                image_mean,
                image_std,
                representation_size,
                box_batch_size_per_image,
                box_positive_fraction,
                box_score_thresh,
                box_detections_per_img,
                anchor_sizes,
            ),
        )
        self.transform = StableSizeTransform(min_size, max_size, list(image_mean), list(image_std))
        self.directions = directions
        self.distances = distances
        self.mask_size = mask_size
        self.semantic_head = nn.Sequential(
            ConvReLU(fpn_channels, head_channels), nn.Conv2d(head_channels, num_classes, 1)
        )
        self.direction_head = nn.Sequential(
            ConvReLU(fpn_channels, head_channels), nn.Conv2d(head_channels, directions * distances, 1)
        )
        self.coarse = nn.Conv2d(2, 1, 1)
        self.refine = nn.Sequential(
            ConvReLU(fpn_channels + 1, refine_channels),
            ConvReLU(refine_channels, refine_channels),
            ConvReLU(refine_channels, refine_channels),
            nn.Conv2d(refine_channels, 1, 1),
        )
        # The direction (and distance) bin of each cell of the box grid, from the cell to the box centre.
        centres = (torch.arange(mask_size, dtype=torch.float32) + 0.5) / mask_size
        cell_y, cell_x = torch.meshgrid(centres, centres, indexing="ij")
        cell_bins = direction_distance_bins(0.5 - cell_y, 0.5 - cell_x, 0.5**0.5, directions, distances)
        self.register_buffer("cell_bins", cell_bins, persistent=False)

    def mask_logits(
        self,
        features: dict[str, torch.Tensor],
        semantic: torch.Tensor,
        direction: torch.Tensor,
        image_size: int,
        boxes: list[torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Refined mask logits [R, 1, M, M] of ``boxes`` (image coordinates), each for its class in
        ``labels``."""
        size = self.mask_size
        stride8 = semantic.shape[-1] / image_size
        semantic_crop = roi_align(semantic, boxes, size, stride8, 2, aligned=True)
        semantic_crop = semantic_crop[torch.arange(len(labels), device=labels.device), labels][:, None]
        direction_crop = roi_align(direction, boxes, size, stride8, 2, aligned=True)
        bins = self.cell_bins.expand(len(labels), 1, size, size)
        pooled_direction = direction_crop.gather(1, bins)
        coarse = self.coarse(torch.cat([semantic_crop, pooled_direction], dim=1))
        low = features["0"]
        hypercolumn = roi_align(low, boxes, size, low.shape[-1] / image_size, 2, aligned=True)
        return self.refine(torch.cat([coarse, hypercolumn], dim=1))

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, losses = self.rpn(batch, features, targets)
        detections, box_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        losses.update(box_losses)
        semantic = self.semantic_head(features["1"])
        direction = self.direction_head(features["1"])
        width = batch.tensors.shape[-1]
        if self.training:
            losses.update(self.dense_losses(semantic, direction, batch, targets))
            losses["loss_mask"] = self.mask_loss(features, semantic, direction, width, proposals, targets)
            return losses
        boxes = [detection["boxes"] for detection in detections]
        labels = torch.cat([detection["labels"] for detection in detections])
        if len(labels):
            probabilities = self.mask_logits(features, semantic, direction, width, boxes, labels).sigmoid()
        else:
            probabilities = semantic.new_zeros((0, 1, self.mask_size, self.mask_size))
        for detection, masks in zip(detections, probabilities.split([len(b) for b in boxes])):
            detection["masks"] = masks
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def mask_loss(self, features, semantic, direction, width, proposals, targets) -> torch.Tensor:
        """Binary cross-entropy of the refined masks of the positive RoIs against their instance's mask."""
        proposals, matched, labels, _ = self.roi_heads.select_training_samples(proposals, targets)
        positive = [torch.where(label > 0)[0] for label in labels]
        boxes = [proposal[index] for proposal, index in zip(proposals, positive)]
        matched = [match[index] for match, index in zip(matched, positive)]
        labels = torch.cat([label[index] for label, index in zip(labels, positive)])
        if not len(labels):
            return semantic.sum() * 0
        logits = self.mask_logits(features, semantic, direction, width, boxes, labels)
        projected = torch.cat(
            [
                project_masks_on_boxes(target["masks"], box, match, self.mask_size)
                for target, box, match in zip(targets, boxes, matched)
            ]
        )
        return F.binary_cross_entropy_with_logits(logits[:, 0], projected)

    def dense_losses(self, semantic, direction, batch, targets) -> dict[str, torch.Tensor]:
        """Semantic cross-entropy over every pixel of the images (padding ignored), and direction
        cross-entropy over object pixels, both at the logits' stride-8 resolution."""
        height, width = batch.tensors.shape[-2:]
        classes = torch.full((len(targets), height, width), 255, dtype=torch.long, device=semantic.device)
        bins = torch.full_like(classes, 255)
        ys, xs = torch.meshgrid(
            torch.arange(height, device=semantic.device, dtype=torch.float32),
            torch.arange(width, device=semantic.device, dtype=torch.float32),
            indexing="ij",
        )
        for index, ((image_height, image_width), target) in enumerate(zip(batch.image_sizes, targets)):
            classes[index, :image_height, :image_width] = 0
            for mask, label in zip(target["masks"].bool(), target["labels"]):
                area = mask.sum()
                if not area:
                    continue
                centre_y = ys[: mask.shape[0], : mask.shape[1]][mask].mean()
                centre_x = xs[: mask.shape[0], : mask.shape[1]][mask].mean()
                region = torch.zeros((height, width), dtype=torch.bool, device=mask.device)
                region[: mask.shape[0], : mask.shape[1]] = mask
                classes[index][region] = label
                dy, dx = centre_y - ys[region], centre_x - xs[region]
                reach = torch.sqrt(dy**2 + dx**2).max().clamp(min=1e-6)
                bins[index][region] = direction_distance_bins(dy, dx, reach, self.directions, self.distances)
        size = semantic.shape[-2:]
        classes = F.interpolate(classes[:, None].float(), size=size, mode="nearest")[:, 0].long()
        bins = F.interpolate(bins[:, None].float(), size=size, mode="nearest")[:, 0].long()
        losses = {"loss_semantic": F.cross_entropy(semantic, classes, ignore_index=255)}
        has_objects = (bins != 255).any()
        losses["loss_direction"] = (
            F.cross_entropy(direction, bins, ignore_index=255) if has_objects else direction.sum() * 0
        )
        return losses
