"""Deep Parsing Network (DPN): one mean-field step of an MRF, written as layers b11-b15.

Liu, Li, Luo, Loy, Tang. "Semantic Image Segmentation via Deep Parsing Network", ICCV 2015. A VGG16
unary at output stride 8 (here DeepLab-LargeFOV's trunk with VGG's 4096-wide fc6/fc7) gives class scores;
then, as the paper's Table 1 lays them out:
- b11: the unary scores upsampled (bilinear) to the input's resolution; Q = sigmoid(scores);
- b12: the triple penalty's smoothness term, a *local* convolution. Its 50x50 weights at pixel j differ by
  position: a learned spatial filter per class k_c(z - j), times the appearance and distance terms d(j, z)
  of the pair. We take d as Gaussians of the colour difference and of the distance,
  exp(-|I_j - I_z|^2 / 2 s_a^2 - |j - z|^2 / 2 s_d^2) (``appearance_sigma`` in units of the normalised
  input, ``distance_sigma`` in pixels): the paper names the features, not the kernel's form;
- b13: the label context, a 9x9 convolution from the classes to classes x 5 mixture components;
- b14: block-min pooling over each class's components;
- b15: the penalty subtracted from the upsampled unary scores; a softmax (the loss's) gives the marginals.

Cost: b12 visits 2,500 offsets per pixel at full resolution, one shifted copy of the image at a time,
about 14 GFLOP per 512x512 image with 21 classes. Each filter row is recomputed in backward (activation
checkpointing), so memory holds one row's 50 offsets, not 2,500. Measured on 2 CPU cores (2026-12-04), one
360x480 CamVid image with 11 classes: 6.7 s forward and 12.5 s backward for b12, 2.4 GB peak.

The paper trains incrementally: the unary, then the local term, then the global term, then all jointly
(``schedule``, each stage an equal share of the epochs; a stage's earlier layers are held fixed by
detaching them). ``schedule=[joint]`` trains everything from the start.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from segtrain.errors import SegtrainError
from segtrain.models.blocks import resize_to
from segtrain.models.deeplab import LargeFOV

log = logging.getLogger(__name__)

STAGES = ("unary", "local", "global", "joint")


def offset_gaussian(size: int, sigma: float) -> torch.Tensor:
    """[size, size]: exp(-|offset|^2 / 2 sigma^2) over a window whose centre is at (size - 1) // 2."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) // 2
    return torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))


def _filter_row(
    marginals: torch.Tensor, image: torch.Tensor, centre: torch.Tensor, weights: torch.Tensor, row: int
) -> torch.Tensor:
    """One row of the window: the sum over its columns z of weights[c, z] * appearance(j, z) * Q_c(z)."""
    height, width = centre.shape[-2:]
    total = torch.zeros_like(centre[:, :1]) * weights[None, :, :1, None]
    for column in range(weights.shape[-1]):
        neighbour = (slice(None), slice(None), slice(row, row + height), slice(column, column + width))
        appearance = torch.exp(-(centre - image[neighbour]).square().sum(1, keepdim=True))
        total = total + appearance * weights[None, :, column, None, None] * marginals[neighbour]
    return total


def triple_penalty(
    marginals: torch.Tensor,
    image: torch.Tensor,
    filters: torch.Tensor,
    appearance_sigma: float,
    distance_sigma: float,
) -> torch.Tensor:
    """b12: out_c(j) = sum over z in j's window of k_c(z - j) d(j, z) Q_c(z); ``filters`` [C, S, S],
    ``marginals`` Q [B, C, H, W], ``image`` [B, 3, H, W]. Outside the image Q is zero."""
    size = filters.shape[-1]
    before, after = (size - 1) // 2, size // 2
    weights = filters * offset_gaussian(size, distance_sigma).to(filters)
    scaled = image / (appearance_sigma * 2**0.5)
    padded_marginals = nn.functional.pad(marginals, (before, after, before, after))
    padded_image = nn.functional.pad(scaled, (before, after, before, after))
    recompute = torch.is_grad_enabled() and (marginals.requires_grad or filters.requires_grad)
    total = marginals.new_zeros(marginals.shape)
    for row in range(size):
        arguments = (padded_marginals, padded_image, scaled, weights[:, row], row)
        # Re-entrant checkpointing: the non-re-entrant kind kept every offset's product here (5 GB at
        # 128x160). Every input is a tensor made outside, so no parameter is reached twice under DDP.
        row_total = (
            checkpoint(_filter_row, *arguments, use_reentrant=True) if recompute else _filter_row(*arguments)
        )
        total = total + row_total
    return total


class MeanFieldStep(nn.Module):
    """b12-b14 at the input's resolution."""

    def __init__(
        self,
        num_classes: int,
        local_size: int = 50,
        context_size: int = 9,
        components: int = 5,
        appearance_sigma: float = 1.0,
        distance_sigma: float = 25.0,
    ):
        super().__init__()
        self.local = nn.Parameter(torch.empty(num_classes, local_size, local_size))
        nn.init.kaiming_uniform_(self.local.view(num_classes, 1, local_size, local_size), a=5**0.5)
        self.appearance_sigma = appearance_sigma
        self.distance_sigma = distance_sigma
        self.context = nn.Conv2d(
            num_classes, num_classes * components, context_size, padding=context_size // 2
        )
        self.components = components
        # The label context starts at zero, so the full model starts from the unary's output (the local
        # filters keep their random start: at zero, neither term would receive a gradient).
        nn.init.zeros_(self.context.weight)
        nn.init.zeros_(self.context.bias)

    def spatial(self, marginals: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return triple_penalty(marginals, image, self.local, self.appearance_sigma, self.distance_sigma)

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
        appearance_sigma: float = 1.0,
        distance_sigma: float = 25.0,
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
        self.mrf = MeanFieldStep(
            num_classes, local_size, context_size, components, appearance_sigma, distance_sigma
        )

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
        unary = resize_to(self.unary(x), x)
        if self.stage == "unary":
            return unary
        fixed = self.training and self.stage != "joint"
        held = unary.detach() if fixed else unary
        spatial = self.mrf.spatial(torch.sigmoid(held), x)
        if self.stage == "local":
            return held - spatial
        penalty = self.mrf.label_context(spatial.detach() if fixed else spatial)
        return held - penalty
