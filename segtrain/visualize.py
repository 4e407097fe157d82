"""Colour masks and overlays, shared by predict and the loggers."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def palette_image(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A mode-P PNG image whose pixel values are the class ids and whose palette is the dataset's."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = [channel for color in palette for channel in color]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[mask]


def blend(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """uint8 HxWx3 overlay of the coloured mask on the image."""
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette).astype(np.float32)
    return mixed.clip(0, 255).astype(np.uint8)


def captioned(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` under a white band holding ``text``."""
    band = Image.new("RGB", (image.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(band), image if image.shape[-1] == 3 else np.repeat(image, 3, -1)], 0)
