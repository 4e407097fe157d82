"""DeepLab v1 (LargeFOV), v2, v3 and v3+.

Chen, Papandreou, Kokkinos, Murphy, Yuille. "Semantic Image Segmentation with Deep Convolutional
Nets and Fully Connected CRFs", ICLR 2015 (DeepLab v1; LargeFOV: VGG16 with pool4/pool5 at stride 1,
conv5 at dilation 2, fc6 as a 3x3 convolution at dilation 12 with 1024 channels, fc7 1x1 1024,
output stride 8, bilinear upsampling; about 20.5M parameters at 21 classes).
Chen et al. "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", TPAMI 2017 (DeepLab v2; ASPP-L: four 3x3 branches at
rates 6/12/18/24 whose logits are summed, on ResNet-101 or VGG16; optional multi-scale input
fusion by max over scales 1, 0.75, 0.5). The dense CRF of v1/v2 is ``inference.crf``.
Chen, Papandreou, Schroff, Adam. "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv:1706.05587, 2017 (DeepLab v3).
Chen, Zhu, Papandreou, Schroff, Adam. "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation", ECCV 2018 (DeepLab v3+).

v3 / v3+ defaults are the papers': ResNet-101, output stride 16, multi-grid (1, 2, 4), ASPP rates
(6, 12, 18) doubled at output stride 8, 256 channels and a final 1x1 classifier; v3+ adds a decoder
over 48-channel low-level features and depthwise-separable atrous convolutions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from segtrain.models.backbones import VGG16, paper_backbone
from segtrain.models.blocks import ASPP, ConvBNReLU, ScaleFusion, SeparableConvBNReLU, resize_to, with_aux

_DEFAULT_BACKBONE = {"name": "resnet101", "output_stride": 16, "multi_grid": (1, 2, 4)}


def _atrous_rates(output_stride: int, rates: Sequence[int] | None) -> Sequence[int]:
    if rates is not None:
        return rates
    return tuple(r * 16 // output_stride for r in (6, 12, 18))


def fc6_fc7(in_channels: int, channels: int, dilation: int, dropout: float) -> nn.Sequential:
    """DeepLab's VGG head: fc6 as a 3x3 atrous conv, fc7 as a 1x1 conv, each with ReLU and dropout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(channels, channels, 1),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
    )


class SummedBranches(nn.ModuleList):
    """Parallel branches over the same features, their outputs summed (DeepLab v2's ASPP-L fusion)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self)


def aspp_l(channels: int, num_classes: int, rates: Sequence[int]) -> SummedBranches:
    """DeepLab v2's ASPP-L over ResNet features: one 3x3 atrous conv to the classes per rate, summed."""
    return SummedBranches(nn.Conv2d(channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates)


class LargeFOV(nn.Module):
    """DeepLab v1's VGG16 trunk with fc6 (3x3, dilation 12) and fc7 (1x1), ReLU and dropout:
    1024-channel features at output stride 8. Shared with ParseNet."""

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 1024,
        dilation: int = 12,
        dropout: float = 0.5,
        backbone: dict | None = None,
    ):
        super().__init__()
        self.trunk = VGG16(in_channels, dilated=True, **(backbone or {}))
        self.fc = fc6_fc7(self.trunk.stage_channels[-1], channels, dilation, dropout)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x)[-1])


class DeepLabV1(nn.Module):
    """DeepLab-LargeFOV."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        fc_channels: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        backbone: dict | None = None,
    ):
        super().__init__()
        self.features = LargeFOV(in_channels, fc_channels, fc6_dilation, dropout, backbone)
        self.classifier = nn.Conv2d(fc_channels, num_classes, 1)

    def features_and_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fc7 features and class scores, both at output stride 8."""
        features = self.features(x)
        return features, self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.features_and_scores(x)[1], x)


class DeepLabV2(nn.Module):
    """ASPP-L over ResNet-101 (output stride 8) or VGG16 (``backbone.name=vgg16``).

    ``scales`` other than (1.0,): the input runs at each scale and the score maps, resized to
    scale 1's, are fused by a per-pixel max; in training each scale's logits are also returned, at their
    own size, as auxiliary outputs (weight 1, scored against the labels subsampled to that size), as the
    paper supervises each scale and the fusion.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        atrous_rates: Sequence[int] = (6, 12, 18, 24),
        scales: Sequence[float] = (1.0,),
        fc_channels: int = 1024,
        dropout: float = 0.5,
    ):
        super().__init__()
        spec = {"name": "resnet101", "output_stride": 8, **(backbone or {})}
        self.fusion = None if tuple(scales) == (1.0,) else ScaleFusion(scales, merge="max")
        if spec["name"] == "vgg16":
            vgg = {key: spec[key] for key in ("weights", "pretrained", "width") if key in spec}
            self.trunk = VGG16(in_channels, dilated=True, **vgg)
            self.branches = SummedBranches(
                nn.Sequential(
                    fc6_fc7(self.trunk.stage_channels[-1], fc_channels, rate, dropout),
                    nn.Conv2d(fc_channels, num_classes, 1),
                )
                for rate in atrous_rates
            )
        else:
            self.trunk = paper_backbone(spec, in_channels=in_channels, out_indices=(4,))
            self.branches = aspp_l(self.trunk.feature_info.channels()[-1], num_classes, atrous_rates)

    def features_and_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)[-1]
        return features, self.branches(features)

    def forward(self, x: torch.Tensor):
        if self.fusion is None:
            return resize_to(self.features_and_scores(x)[1], x)
        fused, scores = self.fusion(self.features_and_scores, x)
        aux = scores if self.training else []
        return with_aux(self, resize_to(fused, x), aux, weight=1.0)


class DeepLabV3(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        atrous_rates: Sequence[int] | None = None,
        channels: int = 256,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(4,), **_DEFAULT_BACKBONE
        )
        rates = _atrous_rates(self.backbone.output_stride, atrous_rates)
        self.aspp = ASPP(self.backbone.feature_info.channels()[-1], rates, channels)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (features,) = self.backbone(x)
        return resize_to(self.head(self.aspp(features)), x)


class DeepLabV3Plus(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: dict | None = None,
        atrous_rates: Sequence[int] | None = None,
        channels: int = 256,
        low_level_channels: int = 48,
    ):
        super().__init__()
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(1, 4), **_DEFAULT_BACKBONE
        )
        low_channels, high_channels = self.backbone.feature_info.channels()
        rates = _atrous_rates(self.backbone.output_stride, atrous_rates)
        self.aspp = ASPP(high_channels, rates, channels, separable=True)
        self.project_low = ConvBNReLU(low_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConvBNReLU(channels + low_level_channels, channels),
            SeparableConvBNReLU(channels, channels),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        low = self.project_low(low)
        context = resize_to(self.aspp(high), low)
        return resize_to(self.decoder(torch.cat([context, low], dim=1)), x)
