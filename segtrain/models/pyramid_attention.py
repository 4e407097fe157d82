"""Pyramid Attention Network (PAN).

Li, Xiong, An, Wang. "Pyramid Attention Network for Semantic Segmentation", BMVC 2018. A ResNet-101
dilated to output stride 16; the Feature Pyramid Attention module (FPA) on res5 and one Global Attention
Upsample (GAU) per decoder level (res4, res3, res2), then a classifier at stride 4.

FPA: a U-shaped pyramid (7x7, 5x5 and 3x3 convolutions at successive halvings of res5, each level fused
top-down with a lateral convolution of the same size) gives an attention map that multiplies a 1x1
"middle" projection of res5; a global-average-pooling branch is added. The pyramid's width
(``pyramid_channels``) is our one open choice: the paper calls the map pixel-level attention and
segmentation_models_pytorch uses 1 channel, broadcast over the middle branch; the paper's Fig. 2 draws
wider maps. 1 is the default; ``pyramid_channels=channels`` gives a per-channel attention.

GAU: the high-level map is average-pooled, then 1x1 conv-BN-sigmoid gives channel weights that multiply a
3x3 conv-BN-ReLU of the low-level map; the high-level map, upsampled, is added.

The paper gives no decoder width: ``channels`` 256 is our choice (segmentation_models_pytorch's PAN uses
32). The classifier is a 3x3 convolution, as in segmentation_models_pytorch, whose PAN this one matches in
parameters at equal settings (tests/test_model_zoo.py) once its redundant conv biases before BN are left
out.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.models.backbones import paper_backbone
from segtrain.models.blocks import ConvBNReLU, resize_to


def halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling that keeps a last odd row and column, so small inputs never pool to nothing."""
    return F.max_pool2d(x, 2, ceil_mode=True)


class FeaturePyramidAttention(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, pyramid_channels: int = 1):
        super().__init__()
        self.global_branch = ConvBNReLU(in_channels, out_channels, 1)
        self.middle = ConvBNReLU(in_channels, out_channels, 1)
        self.down7 = ConvBNReLU(in_channels, pyramid_channels, 7)
        self.down5 = ConvBNReLU(pyramid_channels, pyramid_channels, 5)
        self.down3 = nn.Sequential(
            ConvBNReLU(pyramid_channels, pyramid_channels, 3),
            ConvBNReLU(pyramid_channels, pyramid_channels, 3),
        )
        self.lateral7 = ConvBNReLU(pyramid_channels, pyramid_channels, 7)
        self.lateral5 = ConvBNReLU(pyramid_channels, pyramid_channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level7 = self.down7(halve(x))
        level5 = self.down5(halve(level7))
        level3 = self.down3(halve(level5))
        pyramid = self.lateral5(level5) + resize_to(level3, level5)
        pyramid = self.lateral7(level7) + resize_to(pyramid, level7)
        context = self.global_branch(x.mean(dim=(2, 3), keepdim=True))
        return resize_to(pyramid, x) * self.middle(x) + context


class GlobalAttentionUpsample(nn.Module):
    def __init__(self, low_channels: int, channels: int):
        super().__init__()
        self.low = ConvBNReLU(low_channels, channels, 3)
        self.attention = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.Sigmoid()
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        weights = self.attention(high.mean(dim=(2, 3), keepdim=True))
        return resize_to(high, low) + self.low(low) * weights


class PyramidAttentionNetwork(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        channels: int = 256,
        pyramid_channels: int = 1,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(1, 2, 3, 4), name="resnet101", output_stride=16
        )
        res2, res3, res4, res5 = self.backbone.feature_info.channels()
        self.fpa = FeaturePyramidAttention(res5, channels, pyramid_channels)
        self.gau = nn.ModuleList(GlobalAttentionUpsample(low, channels) for low in (res4, res3, res2))
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res2, res3, res4, res5 = self.backbone(x)
        out = self.fpa(res5)
        for gau, low in zip(self.gau, (res4, res3, res2)):
            out = gau(low, out)
        return resize_to(self.classifier(out), x)
