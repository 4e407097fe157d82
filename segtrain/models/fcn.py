"""FCN over a dilated ResNet, as torchvision ships it.

Long, Shelhamer, Darrell. "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
The ResNet variant (output stride 8, 3x3 head, bilinear upsampling, auxiliary head on res4)
follows torchvision's ``fcn_resnet50``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.models.backbones import create_backbone
from segtrain.models.blocks import FCNHead, resize_to, with_aux


class FCN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        aux_head: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        spec = {"name": "resnet50", "output_stride": 8, **(backbone or {})}
        self.backbone = create_backbone(in_channels=in_channels, out_indices=(3, 4), **spec)
        res4_channels, res5_channels = self.backbone.feature_info.channels()
        self.head = FCNHead(res5_channels, num_classes, dropout)
        self.aux_head = FCNHead(res4_channels, num_classes, dropout) if aux_head else None

    def forward(self, x: torch.Tensor):
        res4, res5 = self.backbone(x)
        out = resize_to(self.head(res5), x)
        aux = [resize_to(self.aux_head(res4), x)] if self.aux_head is not None and self.training else []
        return with_aux(self, out, aux)
