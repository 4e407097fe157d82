"""The embedded referring dataset: coloured shapes on a grid, each referred to by an expression.

Deterministic in (seed, split, index) and drawn in memory, like ``shapes``. Each image holds four objects
(a colour from red, green, blue, yellow and a shape from disc, square, triangle), one per cell of a 3x3
grid. Two of them are twins (same colour and shape), so only a relation to another object tells them
apart: "the red disc left of the blue square". The others have a colour and shape of their own and are
referred to by their attributes: "the blue square". Each image serves ``targets_per_image`` consecutive
items, each referring to another of its objects, so the same image comes with several expressions and
masks: a model that does not read the expression cannot tell which object is meant.
"""

from __future__ import annotations

import numpy as np

from segtrain.data.datasets.shapes import _shape_mask, split_lengths
from segtrain.data.referring import ReferringDataset

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("disc", "square", "triangle")
#: relation -> whether object a stands in it to object b, from their grid cells (row, column).
RELATIONS = {
    "left of": lambda a, b: a[1] < b[1],
    "right of": lambda a, b: a[1] > b[1],
    "above": lambda a, b: a[0] < b[0],
    "below": lambda a, b: a[0] > b[0],
}
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
#: Cells per side; with 96 px images a cell is one stride-32 cell of an FCN-32s.
GRID = 3


def _scene(rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Four objects (two of them twins) in distinct cells, and an expression for each, in a random order;
    drawn again until a relation to a unique object separates the twins."""
    while True:
        kinds = [(c, s) for c in COLORS for s in SHAPES]
        picked = rng.choice(len(kinds), size=3, replace=False)
        twin, *others = [kinds[i] for i in picked]
        cells = [divmod(int(c), GRID) for c in rng.choice(GRID * GRID, size=4, replace=False)]
        objects = [
            {"color": c, "shape": s, "cell": cell} for (c, s), cell in zip([twin, twin, *others], cells)
        ]
        expressions = [None, None] + [f"the {o['color']} {o['shape']}" for o in objects[2:]]
        for index in (0, 1):
            target, twin_object = objects[index], objects[1 - index]
            options = [
                f"the {target['color']} {target['shape']} {relation} the {ref['color']} {ref['shape']}"
                for ref in objects[2:]
                for relation, holds in RELATIONS.items()
                if holds(target["cell"], ref["cell"]) and not holds(twin_object["cell"], ref["cell"])
            ]
            if options:
                expressions[index] = options[int(rng.integers(len(options)))]
        if all(expressions):
            order = rng.permutation(4)
            return [objects[i] for i in order], [expressions[i] for i in order]


class ShapesReferring(ReferringDataset):
    def __init__(
        self,
        split: str,
        lengths: dict | None = None,
        image_size: int = 96,
        targets_per_image: int = 3,
        seed: int = 0,
        root: str | None = None,
        **kwargs,
    ):
        super().__init__(split, **kwargs)
        lengths = split_lengths(lengths, {"train": 3000, "val": 300, "test": 300})
        self.length = int(lengths.get(split, lengths.get("val", 300)))
        self.image_size = image_size
        self.targets_per_image = targets_per_image
        self.seed = seed + 1000 * _SPLIT_SEEDS.get(split, 3)

    def __len__(self) -> int:
        return self.length

    def scene(self, image_index: int) -> tuple[list[dict], list[str]]:
        return _scene(np.random.default_rng([self.seed, image_index]))

    def describe(self, index: int) -> tuple[list[dict], int, str, int]:
        """Item ``index``'s objects, which of them it refers to, its expression, and its image's index."""
        image_index, target = divmod(index, self.targets_per_image)
        objects, expressions = self.scene(image_index)
        target %= len(objects)
        return objects, target, expressions[target], image_index

    def expressions(self) -> list[str]:
        return [self.describe(index)[2] for index in range(len(self))]

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        objects, target, expression, image_index = self.describe(index)
        rng = np.random.default_rng([self.seed, image_index, 1])
        size, cell = self.image_size, self.image_size / GRID
        image = rng.normal(128, 12, size=(size, size, 3))
        mask = np.zeros((size, size), np.uint8)
        for number, obj in enumerate(objects):
            row, column = obj["cell"]
            cy, cx = (
                (row + 0.5 + rng.uniform(-0.06, 0.06)) * cell,
                (column + 0.5 + rng.uniform(-0.06, 0.06)) * cell,
            )
            radius = cell * rng.uniform(0.36, 0.44)
            region = _shape_mask(obj["shape"], size, cx, cy, radius, float(rng.uniform(0, np.pi / 2)))
            color = np.array(COLORS[obj["color"]], np.float64) + rng.normal(0, 10, size=3)
            image[region] = color + rng.normal(0, 8, size=(int(region.sum()), 3))
            if number == target:
                mask[region] = 1
        meta = {"name": f"{self.split}_{index:05d}", "expression": expression, "image_index": image_index}
        return image.clip(0, 255).astype(np.uint8), mask, meta
