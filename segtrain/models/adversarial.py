"""The discriminators of adversarial training for semantic segmentation.

Luc, Couprie, Chintala, Verbeek. "Semantic Segmentation using Adversarial Networks", NIPS 2016 Workshop on
Adversarial Training (arXiv:1611.08408). A discriminator a(x, y) tells ground-truth label maps y from the
segmenter's s(x); the training policy (its inputs, loss and optimizer) is the semantic task's
(``segtrain/tasks/semantic/adversarial.py``).

Discriminators (``architecture``), as we read the paper's figures:
- ``stanford`` (its Stanford Background net): the label map through a 5x5 convolution to 64 channels and
  the image through 5x5 convolutions to 16 and 64, concatenated; then 3x3 convolutions 128, max-pool,
  256, max-pool, 512, and a 3x3 convolution to the output;
- ``pascal`` (its PASCAL VOC net): one stream over the label map (for ``basic`` and ``scaling``
  concatenated with the image): 3x3 convolutions 96, 128, 128, max-pool, 256, 256, max-pool, 512, then the
  output convolution.
The output map is averaged to one logit per image: a(x, y) is the probability that y is the ground truth.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.models.blocks import ConvReLU

ARCHITECTURES = ("stanford", "pascal")


def trunk(in_channels: int, layout: list) -> nn.Sequential:
    """3x3 conv-ReLU layers of the widths in ``layout`` ("M": max-pool), then a 3x3 conv to a logit map."""
    layers: list[nn.Module] = []
    for width in layout:
        if width == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += ConvReLU(in_channels, width, 3)
            in_channels = width
    return nn.Sequential(*layers, nn.Conv2d(in_channels, 1, 3, padding=1))


class StanfordDiscriminator(nn.Module):
    def __init__(self, label_channels: int, image_channels: int = 3, width: float = 1.0):
        super().__init__()
        scaled = lambda n: max(1, int(n * width))  # noqa: E731
        self.labels = ConvReLU(label_channels, scaled(64), 5)
        self.image = nn.Sequential(
            *ConvReLU(image_channels, scaled(16), 5), *ConvReLU(scaled(16), scaled(64), 5)
        )
        self.trunk = trunk(2 * scaled(64), [scaled(128), "M", scaled(256), "M", scaled(512)])

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([self.image(image), self.labels(labels)], dim=1))


class PascalDiscriminator(nn.Module):
    def __init__(self, label_channels: int, image_channels: int = 3, width: float = 1.0, with_image=True):
        super().__init__()
        layout = [w if w == "M" else max(1, int(w * width)) for w in (96, 128, 128, "M", 256, 256, "M", 512)]
        self.with_image = with_image
        self.trunk = trunk(label_channels + (image_channels if with_image else 0), layout)

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([image, labels], dim=1) if self.with_image else labels)
