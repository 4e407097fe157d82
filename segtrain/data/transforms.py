"""Augmentation pipelines: albumentations transforms listed in the data config."""
from __future__ import annotations

from typing import Sequence

import albumentations as A


def compose(transforms: Sequence[A.BasicTransform] | None) -> A.Compose | None:
    """One albumentations pipeline over ``image`` and ``mask``; None when the list is empty."""
    return A.Compose(list(transforms)) if transforms else None
