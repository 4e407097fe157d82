"""Fully convolutional networks: the paper's FCN-32s / 16s / 8s over VGG16, and a ResNet FCN.

Long, Shelhamer, Darrell. "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.

``FCNVGG``: fc6 / fc7 as 7x7x4096 and 1x1x4096 convolutions, 1x1 score layers on fc7, pool4
(16s, 8s) and pool3 (8s), and learnable transposed-conv upsampling initialised bilinear: 32x for
FCN-32s; 2x + 16x for FCN-16s; 2x + 2x + 8x for FCN-8s. The Caffe model pads the input by 100 and
crops every upsampled map; here the input is zero-padded to a multiple of 32 instead, so every
stage lines up exactly, and the output is cropped back: logits at input size for any H, W.
The skip scores are scaled as in the paper's "at-once" FCN-8s release (pool4 by 0.01, pool3 by
0.0001) so that the unnormalised VGG activations add up.

``FCN`` (ResNet): output stride 8, 3x3 head, bilinear upsampling and an auxiliary head on res4,
as torchvision's ``fcn_resnet50``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segtrain.errors import SegtrainError
from segtrain.models.backbones import VGG16, paper_backbone
from segtrain.models.blocks import FCNHead, LearnedUpsample, pad_to_multiple, resize_to, with_aux


class FCNVGG(nn.Module):
    """FCN-32s, FCN-16s or FCN-8s (``variant``) over VGG16; about 134M parameters at 21 classes."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        variant: str = "8s",
        width: int = 4096,
        dropout: float = 0.5,
        backbone: dict | None = None,
    ):
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise SegtrainError(f"model.variant={variant} is not an FCN; use 32s, 16s or 8s")
        self.variant = variant
        self.trunk = VGG16(in_channels, **(backbone or {}))
        _, _, pool3_channels, pool4_channels, pool5_channels = self.trunk.stage_channels
        self.fc6 = nn.Conv2d(pool5_channels, width, 7, padding=3)
        self.fc7 = nn.Conv2d(width, width, 1)
        self.trunk.convolutionalize(self.fc6, 0)
        self.trunk.convolutionalize(self.fc7, 3)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(width, num_classes, 1)
        if variant == "32s":
            self.upsample_out = LearnedUpsample(num_classes, 32)
            return
        self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
        self.upsample_fr = LearnedUpsample(num_classes, 2)
        if variant == "16s":
            self.upsample_out = LearnedUpsample(num_classes, 16)
            return
        self.score_pool3 = nn.Conv2d(pool3_channels, num_classes, 1)
        self.upsample_pool4 = LearnedUpsample(num_classes, 2)
        self.upsample_out = LearnedUpsample(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        _, _, pool3, pool4, pool5 = self.trunk(pad_to_multiple(x, 32))
        score = self.score_fr(self.drop(torch.relu(self.fc7(self.drop(torch.relu(self.fc6(pool5)))))))
        if self.variant != "32s":
            score = self.upsample_fr(score) + self.score_pool4(pool4 * 0.01)
        if self.variant == "8s":
            score = self.upsample_pool4(score) + self.score_pool3(pool3 * 0.0001)
        return self.upsample_out(score)[..., :height, :width]


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
        self.backbone = paper_backbone(
            backbone, in_channels=in_channels, out_indices=(3, 4), name="resnet50", output_stride=8
        )
        res4_channels, res5_channels = self.backbone.feature_info.channels()
        self.head = FCNHead(res5_channels, num_classes, dropout)
        self.aux_head = FCNHead(res4_channels, num_classes, dropout) if aux_head else None

    def forward(self, x: torch.Tensor):
        res4, res5 = self.backbone(x)
        out = resize_to(self.head(res5), x)
        aux = [resize_to(self.aux_head(res4), x)] if self.aux_head is not None and self.training else []
        return with_aux(self, out, aux, weight=0.5)  # torchvision's reference recipe
