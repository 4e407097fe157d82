"""DeepLab v3 and v3+.

Chen, Papandreou, Schroff, Adam. "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv:1706.05587, 2017 (DeepLab v3).
Chen, Zhu, Papandreou, Schroff, Adam. "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation", ECCV 2018 (DeepLab v3+).

Defaults are the papers': ResNet-101, output stride 16, multi-grid (1, 2, 4), ASPP rates
(6, 12, 18) doubled at output stride 8, 256 channels; v3+ adds a decoder over 48-channel
low-level features and depthwise-separable atrous convolutions.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from segtrain.models.backbones import create_backbone
from segtrain.models.blocks import ASPP, ConvBNReLU, SeparableConvBNReLU, resize_to

_DEFAULT_BACKBONE = {"name": "resnet101", "output_stride": 16, "multi_grid": (1, 2, 4)}


def _atrous_rates(output_stride: int, rates: Sequence[int] | None) -> Sequence[int]:
    if rates is not None:
        return rates
    return tuple(r * 16 // output_stride for r in (6, 12, 18))


class DeepLabV3(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        atrous_rates: Sequence[int] | None = None,
        channels: int = 256,
    ):
        super().__init__()
        spec = {**_DEFAULT_BACKBONE, **(backbone or {})}
        self.backbone = create_backbone(in_channels=in_channels, out_indices=(4,), **spec)
        rates = _atrous_rates(spec["output_stride"], atrous_rates)
        self.aspp = ASPP(self.backbone.feature_info.channels()[-1], rates, channels)
        self.head = nn.Sequential(ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.backbone(x)
        return resize_to(self.head(self.aspp(features)), x)


class DeepLabV3Plus(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        atrous_rates: Sequence[int] | None = None,
        channels: int = 256,
        low_level_channels: int = 48,
    ):
        super().__init__()
        spec = {**_DEFAULT_BACKBONE, **(backbone or {})}
        self.backbone = create_backbone(in_channels=in_channels, out_indices=(1, 4), **spec)
        low_channels, high_channels = self.backbone.feature_info.channels()
        rates = _atrous_rates(spec["output_stride"], atrous_rates)
        self.aspp = ASPP(high_channels, rates, channels, separable=True)
        self.project_low = ConvBNReLU(low_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConvBNReLU(channels + low_level_channels, channels),
            SeparableConvBNReLU(channels, channels),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        low = self.project_low(low)
        context = resize_to(self.aspp(high), low)
        return resize_to(self.decoder(torch.cat([context, low], dim=1)), x)
