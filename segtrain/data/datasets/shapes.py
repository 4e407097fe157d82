"""The embedded default dataset: procedurally drawn, textured shapes.

Deterministic in (seed, split, index) and generated in memory, so it ships with the package
and needs no download. Colours are random; each class has a preferred texture family that it
shows four times in five, so a model must combine texture with outline (a ring is a disc with
a hole; a cross is not a square) under overlap and noise. A majority-class predictor scores a
mIoU of about 0.13.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw

from segtrain.data.datasets.base import SegmentationDataset
from segtrain.errors import SegtrainError

CLASSES = ("background", "disc", "square", "triangle", "cross", "ring")
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def split_lengths(lengths, default: dict[str, int]) -> dict[str, int]:
    """``data.dataset.lengths``: images per split, ``default`` when unset. A value that is no mapping
    (``lengths=train:32``, or a shell that ate the braces of ``{train:32}``) is one error with the spelling
    that passes."""
    if lengths is None:
        return dict(default)
    if not isinstance(lengths, Mapping):
        raise SegtrainError(
            f"data.dataset.lengths={lengths!r} must map each split to its number of images; write "
            "'data.dataset.lengths={train:32,val:8,test:8}' (quoted, so that the shell keeps the braces), or "
            "set one split with data.dataset.lengths.train=32"
        )
    return dict(lengths)


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    def rotate(points):
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "square":
        r = radius * 0.8
        return rotate([(-r, -r), (r, -r), (r, r), (-r, r)])
    if kind == "triangle":
        # A triangle covers 41% of its circumcircle (a disc 100%): enlarge it to balance areas.
        radius *= 1.3
        return rotate(
            [
                (radius * math.cos(a), radius * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
            ]
        )
    arm, r = radius * 0.33, radius
    return rotate(
        [
            (-arm, -r),
            (arm, -r),
            (arm, -arm),
            (r, -arm),
            (r, arm),
            (arm, arm),
            (arm, r),
            (-arm, r),
            (-arm, arm),
            (-r, arm),
            (-r, -arm),
            (-arm, -arm),
        ]
    )


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ("disc", "ring"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=1)
        if kind == "ring":
            hole = radius * 0.5
            draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=0)
    else:
        draw.polygon(_polygon(kind, cx, cy, radius, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _texture(rng: np.random.Generator, size: int, kind: int, contrast: float = 1.0) -> np.ndarray:
    """HxWx3 float texture in two random colours: 0 flat, 1 stripes, 2 checkerboard, 3 dots,
    4 smooth noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    first = rng.uniform(0, 255, size=3).astype(np.float32)
    second = (first + contrast * rng.uniform(-255, 255, size=3)).clip(0, 255).astype(np.float32)
    if kind == 0:
        weight = np.zeros((size, size), np.float32)
    elif kind == 1:
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 8)
        weight = (np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0).astype(
            np.float32
        )
    elif kind == 2:
        cell = rng.integers(3, 6)
        weight = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == 3:
        period = rng.uniform(4, 7)
        weight = ((np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)) > 0.5).astype(
            np.float32
        )
    else:
        coarse = rng.uniform(0, 1, size=(size // 8 + 2, size // 8 + 2)).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).clip(0, 1)
    return first + weight[..., None] * (second - first)


class Shapes(SegmentationDataset):
    """Textured discs, squares, triangles, crosses and rings on a textured background.

    Shapes overlap (later ones occlude earlier ones), and Gaussian noise is added to the image.
    """

    def __init__(
        self,
        split: str,
        num_classes: int = len(CLASSES),
        lengths: dict[str, int] | None = None,
        image_size: int = 64,
        max_shapes: int = 4,
        noise_std: float = 10.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(split, num_classes, **kwargs)
        lengths = split_lengths(lengths, {split_name: 1000 for split_name in _SPLIT_SEEDS})
        if split not in lengths:
            raise SegtrainError(
                f"data=shapes has no split '{split}'; its splits are {', '.join(lengths)} "
                "(data.split, data.train_split, data.val_split)"
            )
        if not isinstance(lengths[split], int) or lengths[split] < 1:
            raise SegtrainError(f"data.dataset.lengths.{split}={lengths[split]!r} must be an integer >= 1")
        self.length = lengths[split]
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.noise_std = noise_std
        self.seed = seed
        self.images, self.masks = self.generate()

    def generate(self) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size
        images = np.empty((self.length, size, size, self.in_channels), np.uint8)
        masks = np.empty((self.length, size, size), np.uint8)
        for index in range(self.length):
            rng = np.random.default_rng([self.seed, _SPLIT_SEEDS.get(self.split, len(_SPLIT_SEEDS)), index])
            image = _texture(rng, size, kind=4, contrast=0.35)
            mask = np.zeros((size, size), np.uint8)
            for _ in range(rng.integers(1, self.max_shapes + 1)):
                label = int(rng.integers(1, len(CLASSES)))
                radius = rng.uniform(0.12, 0.25) * size
                cx, cy = rng.uniform(0.1, 0.9, size=2) * size
                region = _shape_mask(CLASSES[label], size, cx, cy, radius, rng.uniform(0, 2 * math.pi))
                # Each class has its own texture family, drawn in random colours 4 times in 5,
                # and a random family otherwise: outline and texture both carry the class.
                kind = label - 1 if rng.random() < 0.8 else int(rng.integers(5))
                image[region] = _texture(rng, size, kind)[region]
                mask[region] = label
            image += rng.normal(0, self.noise_std, image.shape).astype(np.float32)
            image = image.clip(0, 255).astype(np.uint8)
            images[index] = image if self.in_channels == 3 else image.mean(-1, keepdims=True).astype(np.uint8)
            masks[index] = mask
        return images, masks

    def __len__(self) -> int:
        return self.length

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        return self.images[index], self.masks[index], {"name": f"{self.split}_{index:05d}"}
