"""V-Net: a volumetric fully convolutional network with residual stages.

Milletari, Navab, Ahmadi. "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation", 3DV 2016. Five resolution stages of 16, 32, 64, 128 and 256 channels with 1, 2, 3,
3 and 3 convolutions (5x5x5, PReLU), each stage learning a residual; 2x2x2 stride-2 convolutions
go down, 2x2x2 stride-2 transposed convolutions come up, and the up stages (3, 3, 2 and 1
convolutions) take the concatenated skip features. A 1x1x1 convolution gives the class scores;
the paper trains them with its Dice loss (``loss=dice loss.squared=true``).

Inputs are zero-padded to a multiple of 16 in every dimension and the logits cropped back, so any
D, H, W works (e.g. 37x45x53).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from segtrain.models.blocks import pad_to_multiple


def conv5(channels: int, count: int) -> nn.Sequential:
    layers = []
    for _ in range(count):
        layers += [nn.Conv3d(channels, channels, 5, padding=2), nn.PReLU(channels)]
    return nn.Sequential(*layers)


class DownStage(nn.Module):
    def __init__(self, in_channels: int, convs: int):
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv3d(in_channels, 2 * in_channels, 2, stride=2), nn.PReLU(2 * in_channels)
        )
        self.convs = conv5(2 * in_channels, convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down(x)
        return self.convs(down) + down


class UpStage(nn.Module):
    """Transposed conv to half the channels, concatenation with the skip, convs, residual."""

    def __init__(self, in_channels: int, out_channels: int, convs: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels // 2, 2, stride=2), nn.PReLU(out_channels // 2)
        )
        self.convs = conv5(out_channels, convs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([self.up(x), skip], dim=1)
        return self.convs(merged) + merged


class VNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        base_channels: int = 16,
        down_convs: Sequence[int] = (2, 3, 3, 3),
        up_convs: Sequence[int] = (3, 3, 2, 1),
    ):
        super().__init__()
        self.base_channels = base_channels
        self.input = nn.Sequential(
            nn.Conv3d(in_channels, base_channels, 5, padding=2), nn.PReLU(base_channels)
        )
        channels = [base_channels * 2**i for i in range(len(down_convs) + 1)]
        self.down = nn.ModuleList(DownStage(c, n) for c, n in zip(channels[:-1], down_convs))
        # Up stage i returns 2 x the channels of the skip it merges (the paper's 256, 128, 64, 32).
        skips = channels[-2::-1]
        ins = [channels[-1]] + [2 * c for c in skips[:-1]]
        self.up = nn.ModuleList(UpStage(i, 2 * s, n) for i, s, n in zip(ins, skips, up_convs))
        self.classifier = nn.Conv3d(2 * skips[-1], num_classes, 1)
        self.multiple = 2 ** len(down_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        padded = pad_to_multiple(x, self.multiple)
        # The first stage's residual adds the input, repeated across its channels.
        copies = -(-self.base_channels // padded.shape[1])
        features = [self.input(padded) + padded.repeat(1, copies, 1, 1, 1)[:, : self.base_channels]]
        for stage in self.down:
            features.append(stage(features[-1]))
        out = features.pop()
        for stage in self.up:
            out = stage(out, features.pop())
        return self.classifier(out)[..., : size[0], : size[1], : size[2]]
