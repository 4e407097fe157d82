"""ParseNet: global context by pooling, L2 normalisation and unpooling.

Liu, Rabinovich, Berg. "ParseNet: Looking Wider to See Better", ICLR 2016 workshop
(arXiv:1506.04579). On the DeepLab-LargeFOV trunk (as the paper's PASCAL VOC model): fc7 features
are average-pooled over the whole image into a context vector; the local features and the context
vector are each L2-normalised across channels and rescaled by a learned per-channel factor
(initialised to 10, Sec. 3.3), the context is unpooled (broadcast) to every position,
concatenated with the local features and classified by a 1x1 convolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.models.blocks import resize_to
from segtrain.models.deeplab import LargeFOV


class L2Norm(nn.Module):
    """Per-position L2 normalisation across channels with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float = 10.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-10) * self.scale


class ParseNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        fc_channels: int = 1024,
        scale: float = 10.0,
        dropout: float = 0.5,
        backbone: dict | None = None,
    ):
        super().__init__()
        self.features = LargeFOV(in_channels, fc_channels, dropout=dropout, backbone=backbone)
        self.norm_local = L2Norm(fc_channels, scale)
        self.norm_context = L2Norm(fc_channels, scale)
        self.classifier = nn.Conv2d(2 * fc_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.features(x)
        context = self.norm_context(local.mean(dim=(2, 3), keepdim=True)).expand_as(local)
        return resize_to(self.classifier(torch.cat([self.norm_local(local), context], dim=1)), x)
