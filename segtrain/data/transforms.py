"""Augmentation pipelines: albumentations transforms listed in the data config.

albumentations draws from its own generator, which ``seed_everything`` does not reach: each pipeline is
seeded from the run's ``seed``, and each DataLoader worker re-seeds it from the seed torch gave that
worker, so runs repeat and workers do not draw the same augmentations.
"""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function


def compose(transforms: Sequence[A.BasicTransform] | None, seed: int | None = None) -> A.Compose | None:
    """One albumentations pipeline over ``image`` and ``mask``; None when the list is empty."""
    return A.Compose(list(transforms), seed=seed) if transforms else None


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: Lightning's seeding of numpy / random / torch, then the dataset's pipeline."""
    pl_worker_init_function(worker_id)
    dataset = torch.utils.data.get_worker_info().dataset
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)
