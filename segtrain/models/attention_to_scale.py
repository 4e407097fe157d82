"""Attention to Scale: multi-scale inputs merged by learned per-pixel weights.

Chen, Yang, Wang, Xu, Yuille. "Attention to Scale: Scale-Aware Semantic Image Segmentation", CVPR 2016.
One DeepLab-LargeFOV, its weights shared, runs on the input at scales {1, 0.75, 0.5}; each scale's score
map is resized to the score map of scale 1. The attention model reads the fc7 features of every scale
(resized likewise and concatenated): a 3x3 convolution to 512 channels with ReLU, then a 1x1 convolution
to one channel per scale, and a softmax over the scales at each pixel. The merged score map is
sum_s w_s * score_s. Extra supervision, which the paper finds essential, puts the same cross-entropy on
the merged output and on every scale's output (weight 1 each). Each scale's score map is supervised at its
own size, against the ground truth subsampled (nearest) to it, as the authors' DeepLab MSC training does
with its shrunk labels; the merged output is supervised at the input's size.

The fusion is ``blocks.ScaleFusion``, which is also DeepLab v2's multi-scale input (MSC) with ``merge="max"``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from segtrain.models.blocks import ScaleFusion, resize_to, with_aux
from segtrain.models.deeplab import DeepLabV1


class AttentionToScale(DeepLabV1):
    """DeepLab-LargeFOV shared across scales, merged by attention (``merge="max"``: max fusion)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        scales: Sequence[float] = (1.0, 0.75, 0.5),
        merge: str = "attention",
        attention_channels: int = 512,
        fc_channels: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        backbone: dict | None = None,
    ):
        super().__init__(num_classes, in_channels, fc_channels, fc6_dilation, dropout, backbone)
        self.fusion = ScaleFusion(scales, merge, fc_channels, attention_channels)

    def forward(self, x: torch.Tensor):
        merged, scores = self.fusion(self.features_and_scores, x)
        aux = scores if self.training else []
        return with_aux(self, resize_to(merged, x), aux, weight=1.0)
