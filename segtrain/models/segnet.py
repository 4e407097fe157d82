"""SegNet: an encoder-decoder that upsamples with the encoder's max-pooling indices.

Badrinarayanan, Kendall, Cipolla. "SegNet: A Deep Convolutional Encoder-Decoder Architecture for
Image Segmentation", TPAMI 2017. Encoder: the 13 convolutions of VGG16 with batch normalisation,
no fully connected layers. Decoder: the mirror image; each stage max-unpools with the indices
its encoder stage recorded (no learned upsampling) and convolves (3x3, BN, ReLU). The last
decoder convolution outputs the class scores. About 29.5M parameters.

Inputs are zero-padded to a multiple of 32 so that every unpooling matches its pooling, and the
logits are cropped back: any H, W.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.models.backbones import VGG16
from segtrain.models.blocks import ConvBNReLU, max_unpool2d, pad_to_multiple


def mirrored_channels(stage_channels: list[int]) -> list[list[int]]:
    """Output channels of the decoder's convolutions, deepest stage first: VGG16's convolutions
    in reverse, so (512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,)."""
    c1, c2, c3, c4, c5 = stage_channels
    return [[c5, c5, c5], [c4, c4, c3], [c3, c3, c2], [c2, c1], [c1]]


def conv_stages(stage_outputs: list[list[int]], in_channels: int, block) -> nn.ModuleList:
    """One nn.Sequential of ``block(in, out)`` per stage, chaining channels across stages."""
    stages = []
    for outputs in stage_outputs:
        layers = []
        for out in outputs:
            layers.append(block(in_channels, out))
            in_channels = out
        stages.append(nn.Sequential(*layers))
    return nn.ModuleList(stages)


def unpool_and_decode(out: torch.Tensor, stages: list, decoder: nn.ModuleList) -> torch.Tensor:
    """Deepest stage first: max-unpool with the encoder stage's switches, then that stage's decoder."""
    for (_, indices, size), decode in zip(reversed(stages), decoder):
        out = decode(max_unpool2d(out, indices, size))
    return out


class SegNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, backbone: dict | None = None):
        super().__init__()
        self.encoder = VGG16(in_channels, batch_norm=True, return_indices=True, **(backbone or {}))
        channels = self.encoder.stage_channels
        self.decoder = conv_stages(mirrored_channels(channels), channels[-1], ConvBNReLU)
        self.classifier = nn.Conv2d(channels[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        stages = self.encoder(pad_to_multiple(x, 32))
        return self.classifier(unpool_and_decode(stages[-1][0], stages, self.decoder))[..., :height, :width]
