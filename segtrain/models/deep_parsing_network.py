"""Deep Parsing Network (DPN): one mean-field step of an MRF, written as convolution layers.

Liu, Li, Luo, Loy, Tang. "Semantic Image Segmentation via Deep Parsing Network", ICCV 2015. A VGG16
unary at output stride 8 (here DeepLab-LargeFOV's trunk with VGG's 4096-wide fc6/fc7) gives class scores
u and sigmoid class maps Q = sigmoid(u). One mean-field update follows as layers:
- the triple-penalty (spatial) term: a 50x50 convolution per class over Q (``local``), one filter per
  class shared over the positions; the paper's appearance weighting of that filter is not modelled;
- the label-context term: a 9x9 convolution from the classes to classes x 5 mixture components
  (``context``), then block-min pooling over the components;
- the penalties are subtracted from the unary scores and a softmax (the loss's) gives the marginals.

The paper trains incrementally: the unary, then the local term, then the global term, then all jointly
(``schedule``, each stage an equal share of the epochs; a stage's earlier layers are held fixed by
detaching them). ``schedule=[joint]`` trains everything from the start.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.errors import SegtrainError
from segtrain.models.blocks import resize_to
from segtrain.models.deeplab import LargeFOV

log = logging.getLogger(__name__)

STAGES = ("unary", "local", "global", "joint")


class MeanFieldStep(nn.Module):
    def __init__(self, num_classes: int, local_size: int = 50, context_size: int = 9, components: int = 5):
        super().__init__()
        self.local = nn.Conv2d(num_classes, num_classes, local_size, groups=num_classes, bias=False)
        self.context = nn.Conv2d(
            num_classes, num_classes * components, context_size, padding=context_size // 2
        )
        self.components = components
        # The label context starts at zero, so the full model starts from the unary's output (the local
        # filters keep their random start: at zero, neither term would receive a gradient).
        nn.init.zeros_(self.context.weight)
        nn.init.zeros_(self.context.bias)
        size = local_size - 1
        self.local_padding = (size // 2, size - size // 2) * 2

    def spatial(self, marginals: torch.Tensor) -> torch.Tensor:
        return self.local(F.pad(marginals, self.local_padding))

    def label_context(self, spatial: torch.Tensor) -> torch.Tensor:
        penalties = self.context(spatial)
        return penalties.unflatten(1, (-1, self.components)).amin(dim=2)


class DeepParsingNetwork(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        fc_channels: int = 4096,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        local_size: int = 50,
        context_size: int = 9,
        components: int = 5,
        schedule: Sequence[str] = STAGES,
        backbone: dict | None = None,
    ):
        super().__init__()
        unknown = [stage for stage in schedule if stage not in STAGES]
        if unknown or not schedule:
            raise SegtrainError(
                f"model.schedule={list(schedule)}: the stages are {', '.join(STAGES)} (the paper's order)"
            )
        self.schedule = tuple(schedule)
        #: The stage being trained; a built model predicts with the schedule's last.
        self.stage = self.schedule[-1]
        self.unary = nn.Sequential(
            LargeFOV(in_channels, fc_channels, fc6_dilation, dropout, backbone),
            nn.Conv2d(fc_channels, num_classes, 1),
        )
        self.mrf = MeanFieldStep(num_classes, local_size, context_size, components)

    def begin_epoch(self, epoch: int, max_epochs: int) -> None:
        """Picks the schedule's stage for ``epoch``: each stage trains for an equal share of the epochs."""
        if max_epochs is None or max_epochs <= 0:
            return
        if epoch == 0 and max_epochs < len(self.schedule):
            log.warning(
                "model.schedule has %d stages but trainer.max_epochs=%d: some stages get no epoch",
                len(self.schedule),
                max_epochs,
            )
        self.stage = self.schedule[min(epoch * len(self.schedule) // max_epochs, len(self.schedule) - 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unary = self.unary(x)
        if self.stage == "unary":
            return resize_to(unary, x)
        fixed = self.training and self.stage != "joint"
        held = unary.detach() if fixed else unary
        spatial = self.mrf.spatial(torch.sigmoid(held))
        if self.stage == "local":
            return resize_to(held - spatial, x)
        penalty = self.mrf.label_context(spatial.detach() if fixed else spatial)
        return resize_to(held - penalty, x)
