"""Panoptic FPN: Mask R-CNN with a semantic segmentation branch on the same feature pyramid.

Kirillov, Girshick, He, Dollar. "Panoptic Feature Pyramid Networks", CVPR 2019. One ResNet-FPN trunk
feeds Mask R-CNN's heads (``segtrain.models.mask_rcnn``) for the things and the semantic FPN branch
(``segtrain.models.fpn.ScaleHead``: each of P2-P5 through 3x3 conv, GroupNorm, ReLU and 2x bilinear
upsampling stages to 1/4 scale, summed, a 1x1 convolution, 4x bilinear upsampling) for the stuff. The
branch predicts the stuff classes and one "other" class (index 0) for every thing pixel. The loss is
``instance_weight`` x (Mask R-CNN's losses) + ``semantic_weight`` x (per-pixel cross-entropy), the paper's
lambda_i = 1 and lambda_s = 0.5 on COCO (detectron2 uses the same). The merge of the two outputs into one
panoptic segmentation (thing masks by score with an overlap threshold, then stuff from the semantic map
above a minimum area) is the task's (``segtrain.tasks.panoptic.merge``), so that exports keep both
outputs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.models.detection import IMAGENET_MEAN, IMAGENET_STD
from segtrain.models.fpn import ScaleHead
from segtrain.models.mask_rcnn import MaskRCNN


class SemanticBranch(nn.Module):
    """P2-P5 -> per-pixel logits at 1/4 scale (upsampled by the caller to the batch's size)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(ScaleHead(in_channels, channels, steps) for steps in range(4))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        fused = self.heads[0](pyramid[0], pyramid[0])
        for index, head in enumerate(self.heads):
            if index > 0:
                fused = fused + head(pyramid[index], pyramid[0])
        return self.classifier(fused)


class PanopticFPN(MaskRCNN):
    """``forward(images: list of float [3,H,W] in 0-1, targets=None)``: the losses while training (targets
    as Mask R-CNN's, plus ``semantic``: uint8 [H,W] of branch classes, 0 for things, 255 ignored); else one
    dict per image: Mask R-CNN's detections and ``semantic``, the branch's logits [S+1, H, W] at the image's
    size.

    ``num_classes``: all classes, things and stuff; ``num_things``: the thing classes (Mask R-CNN predicts
    them and the background).
    """

    task = "panoptic"

    def __init__(
        self,
        num_classes: int,
        num_things: int,
        backbone: dict | None = None,
        variant: str = "v1",
        fpn_channels: int = 256,
        semantic_channels: int = 128,
        semantic_weight: float = 0.5,
        instance_weight: float = 1.0,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **mask_rcnn,
    ):
        super().__init__(
            num_things + 1,
            backbone,
            variant,
            fpn_channels,
            min_size,
            max_size,
            image_mean,
            image_std,
            **mask_rcnn,
        )
        self.semantic_branch = SemanticBranch(fpn_channels, semantic_channels, num_classes - num_things + 1)
        self.semantic_weight = semantic_weight
        self.instance_weight = instance_weight
        #: Pixels of the semantic target to leave out (unlabelled, and the padding of a batch).
        self.ignore_index = 255

    def forward(self, images: list[torch.Tensor], targets: Optional[list[dict[str, torch.Tensor]]] = None):
        original_sizes: list[tuple[int, int]] = []
        for image in images:
            original_sizes.append((image.shape[-2], image.shape[-1]))
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, proposal_losses = self.rpn(batch, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        pyramid = [features["0"], features["1"], features["2"], features["3"]]
        logits = F.interpolate(
            self.semantic_branch(pyramid), size=batch.tensors.shape[-2:], mode="bilinear", align_corners=False
        )
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            assert targets is not None
            for name, value in proposal_losses.items():
                losses[name] = self.instance_weight * value
            for name, value in detector_losses.items():
                losses[name] = self.instance_weight * value
            shape = [logits.shape[0], logits.shape[2], logits.shape[3]]
            semantic = torch.full(shape, self.ignore_index, dtype=torch.long, device=logits.device)
            for index, target in enumerate(targets):
                mask = target["semantic"]
                semantic[index, : mask.shape[-2], : mask.shape[-1]] = mask.long()
            losses["loss_semantic"] = self.semantic_weight * F.cross_entropy(
                logits, semantic, ignore_index=self.ignore_index
            )
        else:
            detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
            for index, (height, width) in enumerate(batch.image_sizes):
                cropped = logits[index : index + 1, :, :height, :width]
                size = [original_sizes[index][0], original_sizes[index][1]]
                semantic_logits = F.interpolate(cropped, size=size, mode="bilinear", align_corners=False)
                detections[index]["semantic"] = semantic_logits[0]
        # As torchvision's detectors: scripted, both; eagerly, the losses while training, else the detections.
        if torch.jit.is_scripting():
            return losses, detections
        return self.eager_outputs(losses, detections)
