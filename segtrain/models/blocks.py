"""Blocks shared by several models."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (atrous) then pointwise 1x1, each with BN + ReLU (DeepLab v3+, Sec. 3.1)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """Global average pooling -> 1x1 conv -> BN -> ReLU, broadcast back to the input size.

    Global pooling (not AdaptiveAvgPool to a fixed size) keeps ONNX export dynamic in H and W.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(x.mean(dim=(2, 3), keepdim=True))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, Sec. 3.3).

    Branches: a 1x1 conv, one 3x3 atrous conv per rate, and image pooling; concatenated and
    projected to ``out_channels`` with a 1x1 conv. ``separable`` makes the atrous convs
    depthwise-separable, as DeepLab v3+ does.
    """

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        out_channels: int = 256,
        separable: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        atrous = SeparableConvBNReLU if separable else ConvBNReLU
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [atrous(in_channels, out_channels, dilation=rate) for rate in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            ConvBNReLU(out_channels * len(self.branches), out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class FCNHead(nn.Sequential):
    """3x3 conv -> BN -> ReLU -> dropout -> 1x1 classifier (torchvision's FCN and aux head)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        hidden = in_channels // 4
        super().__init__(
            ConvBNReLU(in_channels, hidden, 3),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``reference``."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def with_aux(model: nn.Module, out: torch.Tensor, aux: list[torch.Tensor]):
    """Deep supervision contract: aux logits only in training mode, where a loss consumes them."""
    if model.training and aux:
        return {"out": out, "aux": aux}
    return out
