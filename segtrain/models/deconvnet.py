"""DeconvNet: a learned deconvolution network mirroring VGG16, with unpooling by switches.

Noh, Hong, Han. "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015. The VGG16
convolution trunk, fc6 (7x7, 4096) and fc7 (1x1, 4096), then the mirror: a 7x7 deconvolution
back to 512 channels and, per stage, unpooling with the switch locations its max-pool recorded
followed by 3x3 deconvolutions. Batch normalisation follows every convolution and deconvolution,
as the paper adds it. About 252M parameters.

Size rule: fc6 is a 7x7 convolution without padding over pool5, as in the paper (which runs the
network on 224x224 object proposals), so pool5 must be at least 7x7. Inputs are zero-padded to a
multiple of 32 and the logits cropped back, so any H, W >= 193 works; smaller inputs raise an error.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.errors import SegtrainError
from segtrain.models.backbones import VGG16
from segtrain.models.blocks import pad_to_multiple
from segtrain.models.segnet import conv_stages, mirrored_channels, unpool_and_decode

MIN_SIZE = 193


def deconv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeconvNet(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int = 3, width: int = 4096, backbone: dict | None = None
    ):
        super().__init__()
        self.encoder = VGG16(in_channels, batch_norm=True, return_indices=True, **(backbone or {}))
        channels = self.encoder.stage_channels
        self.fc = nn.Sequential(
            nn.Conv2d(channels[-1], width, 7),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.encoder.convolutionalize(self.fc[0], 0)
        self.encoder.convolutionalize(self.fc[3], 3)
        self.deconv_fc6 = deconv_bn_relu(width, channels[-1], 7, padding=0)
        # The mirror of VGG16's convolutions, with two 64-channel deconvolutions in the last stage.
        stages = mirrored_channels(channels)[:-1] + [[channels[0], channels[0]]]
        self.decoder = conv_stages(stages, channels[-1], deconv_bn_relu)
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height < MIN_SIZE or width < MIN_SIZE:
            raise SegtrainError(
                f"DeconvNet needs inputs of at least {MIN_SIZE}x{MIN_SIZE} (its 7x7 fc6 runs unpadded over "
                f"pool5, as in the paper's 224x224 proposals); got {height} x {width} (H x W). Use a larger "
                "crop."
            )
        stages = self.encoder(pad_to_multiple(x, 32))
        out = self.deconv_fc6(self.fc(stages[-1][0]))
        return self.classifier(unpool_and_decode(out, stages, self.decoder))[..., :height, :width]
