"""Blocks shared by several models."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.errors import SegtrainError


class ConvReLU(nn.Sequential):
    """A conv (``padding`` keeps the size at stride 1), then GroupNorm if ``group_norm`` (with no conv bias:
    the norm's own replaces it), then ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        group_norm: bool = False,
    ):
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=not group_norm
        )
        norm = [nn.GroupNorm(math.gcd(32, out_channels), out_channels)] if group_norm else []
        super().__init__(conv, *norm, nn.ReLU(inplace=True))


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (atrous) then pointwise 1x1, each with BN + ReLU (DeepLab v3+, Sec. 3.1)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                3,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """Global average pooling -> 1x1 conv -> BN -> ReLU, broadcast back to the input size.

    Global pooling (not AdaptiveAvgPool to a fixed size) keeps ONNX export dynamic in H and W.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(x.mean(dim=(2, 3), keepdim=True))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, Sec. 3.3).

    Branches: a 1x1 conv, one 3x3 atrous conv per rate, and image pooling; concatenated and
    projected to ``out_channels`` with a 1x1 conv. ``separable`` makes the atrous convs
    depthwise-separable, as DeepLab v3+ does.
    """

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        out_channels: int = 256,
        separable: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        atrous = SeparableConvBNReLU if separable else ConvBNReLU
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [atrous(in_channels, out_channels, dilation=rate) for rate in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            ConvBNReLU(out_channels * len(self.branches), out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class FCNHead(nn.Sequential):
    """3x3 conv -> BN -> ReLU -> dropout -> 1x1 classifier (torchvision's FCN and aux head)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        hidden = in_channels // 4
        super().__init__(
            ConvBNReLU(in_channels, hidden, 3),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``reference``."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def with_aux(model: nn.Module, out: torch.Tensor, aux: list[torch.Tensor], weight: float | Sequence[float]):
    """Deep supervision contract: aux logits only in training mode, where a loss consumes them, with the
    paper's loss ``weight`` of each (``loss.aux_weight`` overrides it)."""
    if model.training and aux:
        return {"out": out, "aux": aux, "aux_weight": weight}
    return out


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad bottom and right so H and W divide by ``multiple``; crop the output back to the input.

    Encoder-decoder networks whose strides must line up (FCN's skips, SegNet's and DeconvNet's
    unpooling, V-Net) then take any input size, and the padding stays dynamic in ONNX.
    """
    pads = []
    for size in reversed(x.shape[2:]):
        pads += [0, (multiple - size % multiple) % multiple]
    return F.pad(x, pads)


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Transposed-conv weights that upsample each channel bilinearly (FCN's initialisation)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


class LearnedUpsample(nn.ConvTranspose2d):
    """``factor``x transposed convolution initialised to bilinear upsampling, then learned (FCN).

    Kernel 2*factor, stride factor and padding factor/2 give exactly factor x the input size.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        self.weight.data.copy_(bilinear_kernel(channels, 2 * factor))


def _pooling_matrix(size: torch.Tensor | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins x size) averaging weights with PyTorch's adaptive-pooling windows:
    bin i covers [floor(i * size / bins), ceil((i + 1) * size / bins))."""
    positions = torch.arange(size, device=like.device)
    index = torch.arange(bins, device=like.device)
    start = torch.div(index * size, bins, rounding_mode="floor")
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode="floor")
    inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` written as two matrix products.

    ONNX has no adaptive pooling: the exporter turns it into an AveragePool whose kernel is fixed
    by the export size, and fails when the size is not a multiple of the bins (pytorch #42653,
    mmseg #1870). Pooling matrices built from the runtime H and W keep the graph dynamic.
    """
    rows = _pooling_matrix(x.shape[-2], bins, x)
    cols = _pooling_matrix(x.shape[-1], bins, x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: average pooling to each bin count, 1x1 conv to
    in_channels / len(bins) with BN and ReLU, bilinear upsampling, concatenated with the input."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(
            ConvBNReLU(in_channels, in_channels // len(self.bins), 1) for _ in self.bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [
            resize_to(stage(adaptive_avg_pool2d(x, bins)), x) for bins, stage in zip(self.bins, self.stages)
        ]
        return torch.cat([x, *pooled], dim=1)


def max_unpool2d(x: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.max_unpool2d`` to the pre-pool ``size``, written as a scatter.

    Each value goes back to the position its max-pool switch recorded and the rest is zero
    (SegNet, DeconvNet). torch's max_unpool2d cannot be traced with dynamic sizes (its output-size
    check needs a Python bool), so it neither exports to ONNX nor traces; a scatter does both.
    """
    batch, channels = x.shape[:2]
    out = x.new_zeros(batch, channels, size[0] * size[1])
    return out.scatter(2, indices.flatten(2), x.flatten(2)).reshape(batch, channels, size[0], size[1])


#: What each scale's network returns: (features, score map), both at the network's output stride.
ScaleNetwork = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return x
    return F.interpolate(
        x, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )


class ScaleFusion(nn.Module):
    """Multi-scale inputs (Chen et al., "Attention to Scale", CVPR 2016; DeepLab v2's MSC): a network runs at
    each of ``scales`` (the first is 1.0) and the score maps are merged at scale 1, by a per-pixel max (MSC)
    or by attention weights computed from the scales' features (``models.attention_to_scale``)."""

    def __init__(
        self,
        scales: Sequence[float] = (1.0, 0.75, 0.5),
        merge: str = "attention",
        feature_channels: int | None = None,
        attention_channels: int = 512,
    ):
        super().__init__()
        self.scales = tuple(scales)
        if self.scales[0] != 1.0:
            raise SegtrainError(
                f"model.scales={list(scales)} must start with 1.0, the scale whose score map the others join"
            )
        if merge not in ("max", "attention"):
            raise SegtrainError(f"model.merge={merge} is not a scale fusion; use attention or max")
        self.merge = merge
        if merge == "attention":
            self.attention = nn.Sequential(
                nn.Conv2d(feature_channels * len(self.scales), attention_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(attention_channels, len(self.scales), 1),
            )

    def attention_weights(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[B, scales, H, W], summing to 1 over the scales at each pixel."""
        return self.attention(torch.cat(features, dim=1)).softmax(dim=1)

    def forward(self, network: ScaleNetwork, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The merged score map, at the output stride of scale 1, and each scale's score map at its own
        size (the papers supervise each there, against the ground truth subsampled to it)."""
        features, scores, aligned = [], [], []
        for scale in self.scales:
            feature, score = network(rescale(x, scale))
            reference = scores[0] if scores else score
            scores.append(score)
            aligned.append(resize_to(score, reference))
            if self.merge == "attention":
                features.append(resize_to(feature, reference))
        if self.merge == "max":
            return torch.stack(aligned).amax(dim=0), scores
        weights = self.attention_weights(features)
        return sum(weights[:, i : i + 1] * score for i, score in enumerate(aligned)), scores
