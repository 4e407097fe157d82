"""PSPNet: pyramid scene parsing.

Zhao, Shi, Qi, Wang, Jia. "Pyramid Scene Parsing Network", CVPR 2017. A dilated ResNet at output
stride 8; the pyramid pooling module pools res5 to 1x1, 2x2, 3x3 and 6x6 bins, reduces each to
C/4 channels by a 1x1 convolution, upsamples them bilinearly and concatenates them with res5;
a 3x3 convolution (512, BN, ReLU), dropout 0.1 and a 1x1 classifier follow. An auxiliary FCN head
on res4 is trained with loss weight 0.4 (``loss.aux_weight`` overrides it).

The pooling is written as matrix products (``blocks.adaptive_avg_pool2d``), so the ONNX export
keeps H and W dynamic.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from segtrain.models.backbones import paper_backbone
from segtrain.models.blocks import ConvBNReLU, FCNHead, PyramidPooling, resize_to, with_aux


class PSPNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        dropout: float = 0.1,
        aux_head: bool = True,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(3, 4), name="resnet101", output_stride=8
        )
        res4_channels, res5_channels = self.backbone.feature_info.channels()
        self.ppm = PyramidPooling(res5_channels, bins)
        self.head = nn.Sequential(
            ConvBNReLU(2 * res5_channels, channels, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )
        self.aux_head = FCNHead(res4_channels, num_classes, dropout) if aux_head else None

    def forward(self, x: torch.Tensor):
        res4, res5 = self.backbone(x)
        out = resize_to(self.head(self.ppm(res5)), x)
        aux = [resize_to(self.aux_head(res4), x)] if self.aux_head is not None and self.training else []
        return with_aux(self, out, aux, weight=0.4)
