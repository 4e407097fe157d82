"""ReSeg.

Visin, Ciccone, Romero, Kastner, Cho, Bengio, Matteucci, Courville. "ReSeg: A Recurrent Neural
Network-based Model for Semantic Segmentation", CVPR Workshops 2016.

VGG16's conv1_1 to conv3_3 with ImageNet weights, frozen, give features at stride 4. Two ReNet layers
follow (Visin et al. 2015, "ReNet"), each a bidirectional GRU sweep down and up every column, then one
left and right along every row of the result, with 100 units per direction on 1x1 patches: every
position then sees the whole image. Two 2x2 stride-2 transposed convolutions of 50 filters bring the
features back to the input's resolution, and a 1x1 convolution classifies each pixel.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.models.backbones import VGG16
from segtrain.models.blocks import pad_to_multiple


def sweep(gru: nn.GRU, x: torch.Tensor, vertical: bool) -> torch.Tensor:
    """A bidirectional GRU over every column (``vertical``) or every row of x [B, C, H, W]."""
    if vertical:
        x = x.transpose(2, 3)
    batch, channels, rows, length = x.shape
    sequences = x.permute(3, 0, 2, 1).reshape(length, batch * rows, channels)
    out, _ = gru(sequences)
    out = out.reshape(length, batch, rows, -1).permute(1, 3, 2, 0)
    return out.transpose(2, 3) if vertical else out


class ReNetLayer(nn.Module):
    """A vertical bidirectional sweep, then a horizontal one over its output (1x1 patches)."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.vertical = nn.GRU(in_channels, hidden, bidirectional=True)
        self.horizontal = nn.GRU(2 * hidden, hidden, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sweep(self.horizontal, sweep(self.vertical, x, vertical=True), vertical=False)


class ReSeg(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden: int = 100,
        renet_layers: int = 2,
        upsample_channels: int = 50,
        freeze_encoder: bool = True,
        backbone: dict | None = None,
    ):
        super().__init__()
        self.encoder = VGG16(in_channels, **(backbone or {}))
        # conv1_1 .. relu3_3: everything before the third pooling (stride 4).
        self.encoder.features = self.encoder.features[: self.encoder.pool_positions[2]]
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        channels = self.encoder.stage_channels[2]
        layers = []
        for _ in range(renet_layers):
            layers.append(ReNetLayer(channels, hidden))
            channels = 2 * hidden
        self.renet = nn.Sequential(*layers)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(channels, upsample_channels, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(upsample_channels, upsample_channels, 2, stride=2),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(upsample_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        features = self.encoder.features(pad_to_multiple(x, 4))
        logits = self.classifier(self.upsample(self.renet(features)))
        return logits[..., :height, :width]
