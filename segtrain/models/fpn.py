"""Semantic FPN: a feature pyramid with the semantic segmentation branch of Panoptic FPN.

Lin, Dollar, Girshick, He, Hariharan, Belongie. "Feature Pyramid Networks for Object Detection",
CVPR 2017 (the pyramid: lateral 1x1 and output 3x3 convolutions, top-down nearest upsampling;
torchvision's ``FeaturePyramidNetwork``). Kirillov, Girshick, He, Dollar. "Panoptic Feature
Pyramid Networks", CVPR 2019 (the head): each of P2-P5 goes through stages of 3x3 conv (128
channels), GroupNorm, ReLU and 2x bilinear upsampling until it reaches 1/4 scale; the four maps
are summed, classified by a 1x1 convolution and upsampled 4x to the input.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork

from segtrain.models.backbones import paper_backbone
from segtrain.models.blocks import resize_to


class ScaleHead(nn.Module):
    """``steps`` x (3x3 conv, GroupNorm, ReLU, 2x upsampling); one conv without upsampling for P2."""

    def __init__(self, in_channels: int, channels: int, steps: int, groups: int = 32):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                nn.GroupNorm(groups, channels),
                nn.ReLU(inplace=True),
            )
            for i in range(max(steps, 1))
        )
        self.steps = steps

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < self.steps:
                x = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        # Odd sizes halve with flooring, so 2^k x P_k can miss P2 by a pixel; a resize to P2 lines
        # them up (an identity when sizes agree) and keeps the ONNX graph free of size branches.
        return resize_to(x, target)


class SemanticFPN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        fpn_channels: int = 256,
        head_channels: int = 128,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(1, 2, 3, 4), name="resnet50", output_stride=32
        )
        self.fpn = FeaturePyramidNetwork(self.backbone.feature_info.channels(), fpn_channels)
        self.heads = nn.ModuleList(ScaleHead(fpn_channels, head_channels, steps) for steps in range(4))
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        pyramid = list(self.fpn(OrderedDict((f"p{i + 2}", f) for i, f in enumerate(features))).values())
        fused = sum(head(level, pyramid[0]) for head, level in zip(self.heads, pyramid))
        return resize_to(self.classifier(fused), x)
