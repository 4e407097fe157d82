"""Label encodings: from the values a published mask stores to the class ids segtrain trains on.

Most datasets do not store train ids: Cityscapes stores 34 label ids of which 19 are trained,
ADE20K stores 0 for "other" and shifts every class by one, a binary mask saved from an image
editor stores {0, 255}, and colour-coded masks store RGB triples. A ``LabelEncoding`` turns all of
these into ids with one 256-entry lookup table (or a colour table), so a mask costs one indexing
operation however it was published.
"""

from __future__ import annotations

import importlib
from typing import Mapping, Sequence

import numpy as np

from segtrain.errors import SegtrainError

#: ``data.label_map=<name>``: the tables of the published datasets, kept in their reader files.
NAMED_LABEL_MAPS = {
    "cityscapes": "segtrain.data.datasets.cityscapes:LABEL_ID_TO_TRAIN_ID",
    "coco_stuff": "segtrain.data.datasets.coco_stuff:STUFFTHINGMAP_TO_TRAIN_ID",
}


def _named_label_map(name: str) -> Mapping[int, int]:
    if name not in NAMED_LABEL_MAPS:
        raise SegtrainError(
            f"data.label_map={name} is not a known label map; use one of {', '.join(NAMED_LABEL_MAPS)} "
            "or a mapping such as data.label_map={255: 1}"
        )
    module, _, attr = NAMED_LABEL_MAPS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def rgb_code(colors: np.ndarray) -> np.ndarray:
    colors = colors.astype(np.int32)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]


def _parse_color(key) -> tuple[int, int, int]:
    if isinstance(key, str):
        text = key.strip()
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
        parts = text.replace(" ", "").split(",")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return tuple(int(p) for p in parts)
    elif isinstance(key, Sequence) and len(key) == 3:
        return tuple(int(c) for c in key)
    raise SegtrainError(f"data.color_map key {key!r} is not a colour; write 'R,G,B' or '#rrggbb'")


class LabelEncoding:
    """Maps raw mask values to class ids; unmapped colours become ``ignore_index``.

    ``label_map``: ``{raw: id}`` (values not listed keep their value) or the name of a published
    table (``cityscapes``, ``coco_stuff``), under which unlisted values are ignored.
    ``reduce_zero_label``: 0 becomes ignore and every other id moves down by one (ADE20K),
    applied after ``label_map`` as mmsegmentation does.
    ``color_map``: RGB masks; ``"palette"`` (colour i of ``palette`` is class i), a list of
    colours in class order, or ``{"R,G,B": id}``.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        label_map: Mapping[int, int] | str | None = None,
        reduce_zero_label: bool = False,
        color_map: Mapping | Sequence | str | None = None,
        palette: Sequence[Sequence[int]] = (),
    ):
        self.ignore_index = ignore_index
        self.lut = self._build_lut(label_map, reduce_zero_label)
        self.color_codes, self.color_ids = self._build_color_table(color_map, palette)
        #: The masks store class ids as they are: no map of any kind, so mismatches can be diagnosed
        #: as encoding slips ({0, 255}, shifted ids, Cityscapes label ids).
        self.identity = label_map is None and not reduce_zero_label and color_map is None

    @property
    def uses_colors(self) -> bool:
        return self.color_codes is not None

    def _build_lut(self, label_map, reduce_zero_label: bool) -> np.ndarray:
        lut = np.arange(256, dtype=np.int64)
        if isinstance(label_map, str):
            lut[:] = self.ignore_index
            label_map = _named_label_map(label_map)
        for raw, target in (label_map or {}).items():
            if not (0 <= int(raw) <= 255 and 0 <= int(target) <= 255):
                raise SegtrainError(f"data.label_map entry {raw}: {target} is outside 0..255")
            lut[int(raw)] = int(target)
        if reduce_zero_label:
            lut = np.where((lut == 0) | (lut == self.ignore_index), self.ignore_index, lut - 1)
        return lut.astype(np.uint8)

    def _build_color_table(self, color_map, palette) -> tuple[np.ndarray | None, np.ndarray | None]:
        if color_map is None:
            return None, None
        if isinstance(color_map, str):
            if color_map != "palette":
                raise SegtrainError(
                    f"data.color_map={color_map} is not understood; use 'palette', a list or a mapping"
                )
            pairs = [(tuple(color), index) for index, color in enumerate(palette)]
        elif isinstance(color_map, Mapping):
            pairs = [(_parse_color(key), int(value)) for key, value in color_map.items()]
        else:
            pairs = [(_parse_color(color), index) for index, color in enumerate(color_map)]
        codes = rgb_code(np.array([color for color, _ in pairs], np.int32))
        order = np.argsort(codes)
        return codes[order], np.array([index for _, index in pairs], np.uint8)[order]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.uses_colors:
            return self.encode_colors(raw)
        return raw if self.identity else self.lut[raw]

    def encode_colors(self, rgb: np.ndarray) -> np.ndarray:
        codes = rgb_code(rgb)
        position = np.searchsorted(self.color_codes, codes).clip(max=len(self.color_codes) - 1)
        known = self.color_codes[position] == codes
        return np.where(known, self.color_ids[position], self.ignore_index).astype(np.uint8)

    def inverse(self, ids: np.ndarray) -> np.ndarray:
        """Class ids back to the published encoding (e.g. Cityscapes labelIds for its evaluation, or the
        colours of a colour-coded dataset as HxWx3)."""
        if self.uses_colors:
            colors = np.zeros((256, 3), np.uint8)
            for code, index in zip(self.color_codes[::-1], self.color_ids[::-1]):  # the first colour wins
                colors[index] = [(code >> 16) & 255, (code >> 8) & 255, code & 255]
            return colors[ids]
        if self.identity:
            return ids
        inverse = np.full(256, self.ignore_index, np.uint8)
        for raw in range(255, -1, -1):  # the smallest raw value wins where several map to one id
            inverse[self.lut[raw]] = raw
        return inverse[ids]
