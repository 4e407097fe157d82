"""Backbones through timm, with dilated output strides and offline weights.

``output_stride`` 8 or 16 replaces the strides of the last stages with dilation, as DeepLab
(Chen et al. 2017) and PSPNet (Zhao et al. 2017) do; timm implements it for its ResNets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import timm
import torch.nn as nn

from segtrain.errors import SegtrainError


def create_backbone(
    name: str,
    *,
    out_indices: Sequence[int],
    in_channels: int = 3,
    output_stride: int = 32,
    pretrained: bool = False,
    weights: str | None = None,
    multi_grid: Sequence[int] | None = None,
) -> nn.Module:
    """A timm feature extractor returning the feature maps at ``out_indices``.

    ``pretrained=True`` downloads timm's default weights (a connected machine);
    ``weights=/path/file.{pth,safetensors}`` loads a local file instead, for offline machines.
    """
    if output_stride not in (8, 16, 32):
        raise SegtrainError(
            f"model.backbone.output_stride={output_stride} is not supported; use 8, 16 or 32"
        )
    kwargs = {}
    if weights is not None:
        if not Path(weights).is_file():
            raise SegtrainError(
                f"model.backbone.weights={weights} does not exist; point it at a .pth or "
                ".safetensors state dict of the timm model, or set model.backbone.weights=null"
            )
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        model = timm.create_model(
            name,
            features_only=True,
            out_indices=tuple(out_indices),
            in_chans=in_channels,
            output_stride=output_stride,
            pretrained=pretrained,
            **kwargs,
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise SegtrainError(
                f"model.backbone.name={name} is not a timm model; see timm.list_models()"
            ) from err
        raise
    if multi_grid is not None:
        apply_multi_grid(model, multi_grid)
    return model


def apply_multi_grid(model: nn.Module, grid: Sequence[int]) -> None:
    """Multi-grid (DeepLab v3, Sec. 3.2): the 3x3 convs of the last stage's blocks get dilation
    ``stage_dilation * grid[i]``."""
    stage = getattr(model, "layer4", None)
    if stage is None or len(stage) != len(grid):
        raise SegtrainError(
            f"model.backbone.multi_grid={list(grid)} needs a ResNet whose last stage has "
            f"{len(grid)} blocks; set model.backbone.multi_grid=null for this backbone"
        )
    # timm gives a dilated stage's first block the previous stage's dilation; the stage's own
    # dilation is on its later blocks.
    stage_dilation = stage[-1].conv2.dilation[0]
    for block, unit in zip(stage, grid):
        conv = block.conv2
        rate = stage_dilation * unit
        conv.dilation = (rate, rate)
        conv.padding = (rate, rate)
