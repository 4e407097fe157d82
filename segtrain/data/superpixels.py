"""SLIC superpixels (Achanta et al. 2012, scikit-image's ``slic``) for the graph models.

Each channel is rescaled to [0, 1] over the image first, which makes the superpixels of a uint8 image
and of the same image normalised by a mean and std identical: the data workers compute them for training
batches, and a Graph LSTM given none (evaluation, predict) computes the same from its normalised input.
"""

from __future__ import annotations

import numpy as np


def slic_superpixels(
    image: np.ndarray, n_segments: int = 100, compactness: float = 10.0, min_pixels: int = 1
) -> np.ndarray:
    """int64 HxW labels 0..N-1 of a channel-last HxWxC image (uint8 or float): about ``n_segments``, and
    at most one per ``min_pixels`` pixels of the image (a small image gets fewer)."""
    from skimage.segmentation import slic

    n_segments = max(1, min(n_segments, image.shape[0] * image.shape[1] // max(min_pixels, 1)))

    image = image.astype(np.float32)
    low = image.min(axis=(0, 1), keepdims=True)
    span = image.max(axis=(0, 1), keepdims=True) - low
    unit = (image - low) / np.where(span > 0, span, 1)
    labels = slic(
        unit,
        n_segments=n_segments,
        compactness=compactness,
        channel_axis=-1,
        convert2lab=unit.shape[-1] == 3,
        start_label=0,
        enforce_connectivity=True,
    )
    # Contiguous ids whatever SLIC leaves out.
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)
