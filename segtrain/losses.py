"""Segmentation losses. Each takes logits or ``{"out": logits, "aux": [...]}`` and uint8/int targets.

Auxiliary outputs (deep supervision) add ``aux_weight * loss(aux, target)``; ``aux_weight`` is a
number for every aux output or a list with one weight each. Left null, each model's paper weights
apply (the output dict's ``aux_weight``: PSPNet 0.4, DANet 1 per branch, ...). An aux output smaller than
the target is scored against the target subsampled to its size (nearest), as DeepLab's multi-scale
training shrinks its labels for each scale.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.errors import SegtrainError


class SegmentationLoss(nn.Module):
    #: Whether ``compute`` takes ``pixel_weights`` (a per-pixel weight map such as U-Net's).
    takes_pixel_weights = False

    def __init__(self, ignore_index: int = 255, aux_weight: float | Sequence[float] | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight

    def compute(self, logits: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, output, target: torch.Tensor, pixel_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``pixel_weights``: per-pixel weights of the main output (the U-Net weight map), where supported."""
        target = target.long()
        if pixel_weights is not None and not self.takes_pixel_weights:
            raise SegtrainError(
                f"loss {type(self).__name__} does not take per-pixel weights, but data.weight_map is set; "
                "use loss=unet_weight_map (cross-entropy), or set data.weight_map=null"
            )
        extra = {} if pixel_weights is None else {"pixel_weights": pixel_weights}
        if not isinstance(output, dict):
            return self.compute(output, target, **extra)
        loss = self.compute(output["out"], target, **extra)
        aux = output.get("aux", [])
        weight = output.get("aux_weight", 0.4) if self.aux_weight is None else self.aux_weight
        weights = [weight] * len(aux) if isinstance(weight, (int, float)) else list(weight)
        if len(weights) != len(aux):
            raise ValueError(f"loss.aux_weight has {len(weights)} weights for {len(aux)} auxiliary outputs")
        for weight, logits in zip(weights, aux):
            smaller = subsample_to(target, logits)
            # A coarse scale can keep only ignored pixels of a sparsely labelled crop: nothing to score there
            # (its cross-entropy would be 0/0). Only outputs smaller than the labels pay for this check.
            if smaller is not target and not (smaller != self.ignore_index).any():
                continue
            loss = loss + weight * self.compute(logits, smaller)
        return loss


def subsample_to(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The [B, H, W] (or [B, D, H, W]) labels at the logits' spatial size, by nearest neighbour."""
    size = logits.shape[2:]
    if target.shape[1:] == size:
        return target
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


class CrossEntropyLoss(SegmentationLoss):
    takes_pixel_weights = True

    def __init__(self, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        # Not persistent: weights come from the config, so a resumed run uses the config's.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.label_smoothing = label_smoothing

    def compute(self, logits, target, pixel_weights: torch.Tensor | None = None):
        reduction = "mean" if pixel_weights is None else "none"
        losses = F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction=reduction,
        )
        if pixel_weights is None:
            return losses
        valid = target != self.ignore_index
        return (losses * pixel_weights)[valid].sum() / valid.sum().clamp(min=1)


class DiceLoss(SegmentationLoss):
    """1 - soft Dice over softmax probabilities, averaged over the classes present in the target.

    ``squared``: V-Net's form (Milletari et al. 2016, Eq. 1), 2 sum(p g) / (sum p^2 + sum g^2).
    Works for 2D and 3D logits.
    """

    def __init__(self, smooth: float = 1e-5, squared: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.smooth = smooth
        self.squared = squared

    def compute(self, logits, target):
        num_classes = logits.shape[1]
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.float().softmax(1) * valid
        onehot = F.one_hot(target.where(valid.squeeze(1), 0), num_classes).movedim(-1, 1) * valid
        dims = (0, *range(2, logits.ndim))
        intersection = (probs * onehot).sum(dims)
        cardinality = (probs.square() if self.squared else probs).sum(dims) + onehot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        present = onehot.sum(dims) > 0
        return (1 - dice)[present].mean() if present.any() else logits.sum() * 0


class FocalLoss(SegmentationLoss):
    """Lin et al. "Focal Loss for Dense Object Detection", ICCV 2017: -alpha (1 - p_t)^gamma log p_t."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma
        self.alpha = alpha

    def compute(self, logits, target):
        ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        pt = torch.exp(-ce)
        loss = (1 - pt) ** self.gamma * ce
        if self.alpha is not None:
            loss = self.alpha * loss
        return loss[valid].mean() if valid.any() else logits.sum() * 0


class CEDiceLoss(SegmentationLoss):
    """``ce_weight * CE + dice_weight * Dice``, the nnU-Net default."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.ce = CrossEntropyLoss(class_weights=class_weights, ignore_index=self.ignore_index)
        self.dice = DiceLoss(ignore_index=self.ignore_index)
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight

    def compute(self, logits, target):
        return self.ce_weight * self.ce.compute(logits, target) + self.dice_weight * self.dice.compute(
            logits, target
        )


class WeightedSigmoidCrossEntropy(SegmentationLoss):
    """Per-pixel sigmoid cross-entropy of one-channel logits against a 0/1 mask, with the negative pixels
    weighted ``negative_weight`` (Hu et al. 2016: 1/3, since the referred object is a small part of the
    image), averaged over the labelled pixels."""

    def __init__(self, negative_weight: float = 1 / 3, **kwargs):
        super().__init__(**kwargs)
        self.negative_weight = negative_weight

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits[:, 0].float()
        labelled = target != self.ignore_index
        positive = (target == 1).float()
        weights = torch.where(target == 1, 1.0, self.negative_weight) * labelled
        loss = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")
        return (loss * weights).sum() / labelled.sum().clamp(min=1)
