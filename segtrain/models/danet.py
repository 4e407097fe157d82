"""DANet: dual attention over positions and channels.

Fu, Liu, Tian, Li, Bao, Fang, Lu. "Dual Attention Network for Scene Segmentation", CVPR 2019. A dilated
ResNet-101 at output stride 8; two branches on res5, each a 3x3 conv 2048 -> 512 with BN and ReLU, an
attention module, and a 3x3 conv-BN-ReLU:
- position attention: Q and K are 1x1 convolutions to C/8 channels, V to C; A = softmax(Q^T K) over the
  positions, out = gamma * V A^T + x;
- channel attention, without convolutions: energy = X X^T, A = softmax(rowmax(energy) - energy),
  out = beta * A X + x.
gamma and beta start at 0, so both modules start as the identity. The branches are summed, then dropout
0.1 and a 1x1 classifier; each branch also has its own dropout and classifier, and all three outputs are
supervised (weight 1 each).

The position attention holds an (HW)^2 matrix: 64 MB per image at 512x512 input (64x64 at stride 8),
4.3 GB at 1024x2048. conf/model/danet.yaml therefore makes sliding-window inference the default.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.models.backbones import paper_backbone
from segtrain.models.blocks import ConvBNReLU, resize_to, with_aux


class PositionAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // reduction, 1)
        self.key = nn.Conv2d(channels, channels // reduction, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = (conv(x).flatten(2) for conv in (self.query, self.key, self.value))
        attention = torch.bmm(query.transpose(1, 2), key).softmax(dim=-1)
        out = torch.bmm(value, attention.transpose(1, 2))
        return self.gamma * out.reshape(x.shape) + x


class ChannelAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        attention = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        return self.beta * torch.bmm(attention, flat).reshape(x.shape) + x


def classifier(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class DANet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        channels: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(4,), name="resnet101", output_stride=8
        )
        res5 = self.backbone.feature_info.channels()[-1]
        self.position = nn.Sequential(
            ConvBNReLU(res5, channels, 3), PositionAttention(channels), ConvBNReLU(channels, channels, 3)
        )
        self.channel = nn.Sequential(
            ConvBNReLU(res5, channels, 3), ChannelAttention(), ConvBNReLU(channels, channels, 3)
        )
        self.classifier = classifier(channels, num_classes, dropout)
        self.position_classifier = classifier(channels, num_classes, dropout)
        self.channel_classifier = classifier(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor):
        (res5,) = self.backbone(x)
        position, channel = self.position(res5), self.channel(res5)
        out = resize_to(self.classifier(position + channel), x)
        aux = (
            [resize_to(self.position_classifier(position), x), resize_to(self.channel_classifier(channel), x)]
            if self.training
            else []
        )
        return with_aux(self, out, aux, weight=1.0)
