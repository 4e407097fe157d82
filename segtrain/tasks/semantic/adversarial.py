"""The adversarial training policy of semantic segmentation (``adversarial=basic|product|scaling``).

Luc, Couprie, Chintala, Verbeek. "Semantic Segmentation using Adversarial Networks", NIPS 2016 Workshop on
Adversarial Training (arXiv:1611.08408). A discriminator a(x, y) (``segtrain/models/adversarial.py``) tells
ground-truth label maps from the segmenter's s(x); the hybrid loss is

    CE(s(x), y) - lambda * [BCE(a(x, y), 1) + BCE(a(x, s(x)), 0)],

which the discriminator minimises with respect to its own weights (the bracket, sign flipped) and the
segmenter minimises with respect to its weights through the second term. As the paper does, the segmenter
takes the non-saturating form of that term, + lambda * BCE(a(x, s(x)), 1), which has larger gradients
where the discriminator is confident. The ground truth is compared at the segmenter's output size, which
is the input size in segtrain's model contract; ignored pixels are zero in both label maps.

What the discriminator sees of a label map (``input``):
- ``basic``: the label map only (one-hot ground truth, class probabilities of s(x));
- ``product``: the image times each class map, 3 x classes channels;
- ``scaling``: the ground truth made soft: the true class gets max(tau, s_l(x)) (tau = 0.9) and the other
  classes share the rest in proportion to s(x).
With ``basic``, a discriminator can tell one-hot maps from soft ones by their values alone and wins at
once (its accuracy stays at 100%); ``product`` and ``scaling`` take that shortcut away.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from segtrain.errors import SegtrainError
from segtrain.models.adversarial import ARCHITECTURES, PascalDiscriminator, StanfordDiscriminator

INPUTS = ("basic", "product", "scaling")


class Adversary(nn.Module):
    """The discriminator with its input encoding, its loss weight (lambda) and its optimizer factory."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        ignore_index: int = 255,
        input: str = "product",
        architecture: str = "stanford",
        weight: float = 0.1,
        tau: float = 0.9,
        width: float = 1.0,
        optimizer: Callable | None = None,
    ):
        super().__init__()
        if input not in INPUTS:
            raise SegtrainError(f"adversarial.input={input} is not one of {', '.join(INPUTS)}")
        if architecture not in ARCHITECTURES:
            raise SegtrainError(
                f"adversarial.architecture={architecture} is not one of {', '.join(ARCHITECTURES)}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.input = input
        self.weight = weight
        self.tau = tau
        self.optimizer_factory = optimizer or torch.optim.Adam
        label_channels = num_classes * (in_channels if input == "product" else 1)
        if architecture == "stanford":
            self.discriminator = StanfordDiscriminator(label_channels, in_channels, width)
        else:
            self.discriminator = PascalDiscriminator(
                label_channels, in_channels, width, with_image=input != "product"
            )

    def label_maps(self, probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ground truth, prediction) as class maps over labelled pixels; ``scaling`` softens the first."""
        valid = (mask != self.ignore_index).unsqueeze(1)
        target = mask.long().where(valid.squeeze(1), 0)
        truth = F.one_hot(target, self.num_classes).movedim(-1, 1).to(probs.dtype)
        if self.input == "scaling":
            soft = probs.detach()
            true_prob = soft.gather(1, target.unsqueeze(1))
            raised = true_prob.clamp(min=self.tau)
            others = soft * (1 - raised) / (1 - true_prob).clamp(min=1e-6)
            truth = torch.where(truth.bool(), raised.expand_as(soft), others)
        return truth * valid, probs * valid

    def encode(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.input != "product":
            return labels
        return (image.unsqueeze(2) * labels.unsqueeze(1)).flatten(1, 2)

    def logits(
        self, image: torch.Tensor, labels: torch.Tensor, parameters: dict | None = None
    ) -> torch.Tensor:
        """One logit per image; ``parameters``: the discriminator's weights to use instead of its own."""
        encoded = self.encode(image, labels)
        if parameters is None:
            out = self.discriminator(image, encoded)
        else:
            out = functional_call(self.discriminator, parameters, (image, encoded))
        return out.float().mean(dim=(1, 2, 3))

    def losses(
        self, image: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(discriminator loss, segmenter's adversarial term, discriminator accuracy) for one batch.

        One backward pass of ``segmentation loss + weight * term + discriminator loss`` gives each network
        its own gradient: the discriminator's loss sees the prediction detached, and the segmenter's term
        runs the discriminator with detached weights. Both optimizers then step (simultaneous updates),
        which keeps DistributedDataParallel's one backward per step.
        """
        truth, predicted = self.label_maps(probs, mask)
        real_and_fake = self.logits(torch.cat([image, image]), torch.cat([truth, predicted.detach()]))
        labels = torch.cat([torch.ones(len(image)), torch.zeros(len(image))]).to(real_and_fake)
        # BCE(a(x, y), 1) + BCE(a(x, s(x)), 0): twice the mean over the two halves.
        discriminator_loss = 2 * F.binary_cross_entropy_with_logits(real_and_fake, labels)
        accuracy = ((real_and_fake > 0).float() == labels).float().mean()
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fooled = self.logits(image, predicted, frozen)
        term = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        return discriminator_loss, term, accuracy
