"""Reverse Attention Network (RAN).

Huang, Ma, Wang, Zhang, Liu. "Semantic Segmentation with Reverse Attention", BMVC 2017. On DeepLab v2's
VGG16 LargeFOV trunk (conv1-conv5 dilated, output stride 8), two branches each with their own fc6 (3x3,
dilation 12, 1024), fc7 (1x1, 1024) and 1x1 classifier:
- the original branch gives class scores O, "how much is this pixel class c";
- the reverse branch gives R, "how much is this pixel not class c": its scores are negated (the NEG
  block), so -R is supervised as class scores.
The reverse-attention mask is sigmoid(-O): large where the original branch is not confident of c, so the
reverse evidence counts most there. The output is O - sigmoid(-O) * R. Cross-entropy goes on the output,
on O and on -R (weight 1 each).

``backbone.name=resnet101``: the paper's headline trunk, DeepLab v2's ResNet-101 at output stride 8, each
branch then DeepLab v2's ASPP-L (3x3 convs at rates 6, 12, 18, 24 to the classes, summed).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from segtrain.models.backbones import VGG16, paper_backbone
from segtrain.models.blocks import resize_to, with_aux
from segtrain.models.deeplab import aspp_l, fc6_fc7


def reverse_attention_fusion(original: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """O - sigmoid(-O) * R, with R the reverse branch's "not class c" scores."""
    return original - torch.sigmoid(-original) * reverse


class ReverseAttentionNetwork(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        fc_channels: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        atrous_rates: Sequence[int] = (6, 12, 18, 24),
        backbone: dict | None = None,
    ):
        super().__init__()
        spec = {"name": "vgg16", **(backbone or {})}
        if spec.pop("name") == "vgg16":
            self.trunk = VGG16(in_channels, dilated=True, **spec)
            channels = self.trunk.stage_channels[-1]

            def branch() -> nn.Module:
                return nn.Sequential(
                    fc6_fc7(channels, fc_channels, fc6_dilation, dropout),
                    nn.Conv2d(fc_channels, num_classes, 1),
                )
        else:
            self.trunk = paper_backbone(backbone, in_channels=in_channels, out_indices=(4,), output_stride=8)

            def branch() -> nn.Module:
                return aspp_l(self.trunk.feature_info.channels()[-1], num_classes, atrous_rates)

        self.original, self.reverse = branch(), branch()

    def forward(self, x: torch.Tensor):
        conv5 = self.trunk(x)[-1]
        original, reverse = self.original(conv5), self.reverse(conv5)
        out = resize_to(reverse_attention_fusion(original, reverse), x)
        aux = [resize_to(original, x), resize_to(-reverse, x)] if self.training else []
        return with_aux(self, out, aux, weight=1.0)
