"""Whole-image, sliding-window and test-time-augmented inference, batched.

Every mode returns class probabilities ``[B, K, H, W]`` at the input size. Sliding windows are
blended with a Gaussian importance map (as MONAI's ``sliding_window_inference``), so tile borders,
where context is poorest, count least.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@lru_cache(maxsize=8)
def gaussian_importance(height: int, width: int, sigma_scale: float = 0.125) -> torch.Tensor:
    def axis(n: int) -> torch.Tensor:
        coords = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (coords / (sigma_scale * n)) ** 2)

    weight = axis(height)[:, None] * axis(width)[None, :]
    return (weight / weight.max()).clamp(min=1e-3)


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] + crop < size:
        starts.append(size - crop)
    return starts


def sliding_window(
    model: nn.Module, x: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int] | None = None,
    gaussian: bool = True,
) -> torch.Tensor:
    """Logits from overlapping ``crop_size`` windows; inputs smaller than a window are padded."""
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride or (crop_h // 2, crop_w // 2)
    height, width = x.shape[-2:]
    padded = F.pad(x, (0, max(crop_w - width, 0), 0, max(crop_h - height, 0)))
    full_h, full_w = padded.shape[-2:]
    weight = gaussian_importance(crop_h, crop_w).to(x) if gaussian else x.new_ones(crop_h, crop_w)
    logits = None
    norm = x.new_zeros(full_h, full_w)
    for top in _window_starts(full_h, crop_h, stride_h):
        for left in _window_starts(full_w, crop_w, stride_w):
            out = model(padded[..., top : top + crop_h, left : left + crop_w])
            if logits is None:
                logits = x.new_zeros(x.shape[0], out.shape[1], full_h, full_w)
            logits[..., top : top + crop_h, left : left + crop_w] += out * weight
            norm[top : top + crop_h, left : left + crop_w] += weight
    return (logits / norm)[..., :height, :width]


def predict_probs(
    model: nn.Module,
    x: torch.Tensor,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    gaussian: bool = True,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    crf: bool = False,
    crf_params: dict | None = None,
    image: torch.Tensor | None = None,
    **_,
) -> torch.Tensor:
    """Average of the softmax over every scale (and horizontal flip) of normalised input ``x``.

    ``crf``: refine the probabilities with the dense CRF (``segtrain.crf``) over the unnormalised
    RGB ``image`` [B, 3, H, W], as DeepLab v1 / v2 do at test time.
    """

    def logits_of(inp: torch.Tensor) -> torch.Tensor:
        if mode == "slide":
            return sliding_window(model, inp, crop_size, stride, gaussian)
        return model(inp)

    height, width = x.shape[-2:]
    probs = None
    views = 0
    for scale in scales:
        scaled = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            inp = scaled.flip(-1) if flipped else scaled
            out = logits_of(inp)
            if flipped:
                out = out.flip(-1)
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
            out = out.float().softmax(1)
            probs = out if probs is None else probs + out
            views += 1
    probs = probs / views if views > 1 else probs
    if crf:
        from segtrain.crf import dense_crf

        probs = torch.stack([dense_crf(p, rgb, **(crf_params or {})) for p, rgb in zip(probs, image)])
    return probs
