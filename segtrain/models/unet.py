"""U-Net.

Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015.

Paper defaults: 64 -> 1024 channels over four 2x2 max-pools, two unpadded 3x3 convs + ReLU per
level, 2x2 up-convolutions halving the channels, crop-and-concatenate skips, a 1x1 classifier.
``padding="valid"`` is the paper's network; ``forward`` applies the paper's overlap-tile strategy
(mirror-pad the input by the border the valid convolutions consume) so that the logits cover the
input exactly. ``padding="same"`` uses padded convolutions instead.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F


def double_conv(in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels_in in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=padding, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = double_conv(2 * out_channels, out_channels, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        padding: Literal["valid", "same"] = "valid",
        batch_norm: bool = False,
    ):
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' (the paper's) or 'same', got {padding!r}")
        self.padding = padding
        self.depth = depth
        conv_padding = 0 if padding == "valid" else 1
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            double_conv(c_in, c_out, conv_padding, batch_norm)
            for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1])
        )
        self.bottleneck = double_conv(widths[-2], widths[-1], conv_padding, batch_norm)
        self.decoder = nn.ModuleList(
            UpBlock(c_in, c_out, conv_padding, batch_norm)
            for c_in, c_out in zip(widths[:0:-1], widths[-2::-1])
        )
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    @property
    def border(self) -> int:
        """Pixels the valid convolutions consume on each side: 92 for the paper's depth 4."""
        return 6 * 2**self.depth - 4 if self.padding == "valid" else 0

    def output_size(self, input_size: int) -> int:
        """Size of the raw network's output for a valid input size (572 -> 388 in the paper)."""
        return input_size - 2 * self.border

    def valid_output_size(self, min_size: int) -> int:
        """Smallest valid output size >= ``min_size``: every 2x2 max-pool must see an even size."""
        step = 2**self.depth
        return (
            min_size + (-(min_size + 4 * (step - 1))) % step
            if self.padding == "valid"
            else min_size + (-min_size) % step
        )

    def forward_tile(self, x: torch.Tensor) -> torch.Tensor:
        """The network itself. A valid-mode tile shrinks by ``2 * border``."""
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)

    def check_input_size(self, height: int, width: int) -> None:
        needed = self.border + 2**self.depth
        if self.padding == "valid" and min(height, width) <= needed:
            raise ValueError(
                f"U-Net (padding='valid', depth={self.depth}) mirror-pads the input by {self.border} px "
                f"(overlap-tile), so H and W must exceed {needed}; got {height} x {width} (H x W). "
                "Use larger crops or padding='same'."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        self.check_input_size(height, width)
        extra_h = self.valid_output_size(height) - height
        extra_w = self.valid_output_size(width) - width
        border = self.border
        mode = "reflect" if border else "constant"
        x = F.pad(x, (border, border + extra_w, border, border + extra_h), mode=mode)
        return self.forward_tile(x)[..., :height, :width]
