"""The U-Net paper's pixel weight map for separating touching objects.

Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015, Eq. 2:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

w_c balances the class frequencies; d1 and d2 are the distances to the border of the nearest and
the second nearest object (connected components of the ``foreground`` class). The border term
applies to background pixels, so the thin gaps between touching cells weigh up to 1 + w0. The
paper uses w0 = 10 and sigma = 5 pixels.

It is computed per sample in the DataLoader workers (after augmentation, which moves borders),
one distance transform per object, and travels with the batch as ``weight``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def unet_weight_map(
    mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, foreground: int = 1, ignore_index: int = 255
) -> np.ndarray:
    valid = mask != ignore_index
    weight = np.zeros(mask.shape, np.float32)
    classes, counts = np.unique(mask[valid], return_counts=True)
    for label, count in zip(classes, counts):
        # Balanced: every class present contributes the same total weight; the mean weight is 1.
        weight[mask == label] = valid.sum() / (len(classes) * count)
    objects, count = ndimage.label(mask == foreground)
    if count >= 2:
        distances = np.stack(
            [ndimage.distance_transform_edt(objects != index) for index in range(1, count + 1)]
        )
        nearest = np.partition(distances, 1, axis=0)[:2]
        border = w0 * np.exp(-((nearest[0] + nearest[1]) ** 2) / (2 * sigma**2))
        background = valid & (mask != foreground)
        weight[background] += border[background].astype(np.float32)
    return weight
