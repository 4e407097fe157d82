"""Any dataset laid out as ``images/`` and ``masks/`` with files matched by stem.

The split comes from, in this order: a list ``<root>/<split>.txt`` (names or paths, one per line);
subdirectories ``images/<split>/`` and ``masks/<split>/``; or, with neither, a deterministic
hold-out of every k-th image (k = 1 / val_fraction) for ``val`` and the rest for ``train``
(``all`` reads every pair). Masks may store ids, values to remap (``data.label_map``) or colours
(``data.color_map``).
"""

from __future__ import annotations

from pathlib import Path

from segtrain.data.datasets.base import FileDataset
from segtrain.data.io import list_images
from segtrain.errors import SegtrainError


class FolderDataset(FileDataset):
    layout = (
        "images/<name>.<png|jpg|tif|...> and masks/<name><mask_suffix>; optional <split>.txt lists of names "
        "or images/<split>/ and masks/<split>/ subdirectories. Set data.root to the directory holding them."
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        images_dir: str = "images",
        masks_dir: str = "masks",
        mask_suffix: str = ".png",
        val_fraction: float = 0.2,
        **kwargs,
    ):
        self.images_dir, self.masks_dir, self.mask_suffix = images_dir, masks_dir, mask_suffix
        self.val_fraction = val_fraction
        super().__init__(root, split, num_classes, **kwargs)

    def find_samples(self) -> list[tuple[Path, Path]]:
        images, masks = self.root / self.images_dir, self.root / self.masks_dir
        for directory, key in ((images, "images_dir"), (masks, "masks_dir")):
            if not directory.is_dir():
                raise SegtrainError(
                    f"{directory} does not exist; set data.dataset.{key} to the folder name under "
                    f"data.root={self.root}. Expected layout: {self.layout}"
                )
        list_path = self.root / f"{self.split}.txt"
        split_dirs = not list_path.is_file() and (images / self.split).is_dir()
        if split_dirs:
            images, masks = images / self.split, masks / self.split
        files = list_images(images)
        stems = {p.stem for p in files}
        self.unpaired += sorted(
            mask
            for mask in masks.iterdir()
            if mask.name.endswith(self.mask_suffix) and mask.name[: -len(self.mask_suffix)] not in stems
        )
        if list_path.is_file():
            listed = {Path(row[0]).stem for row in self.read_split_list(list_path)}
            absent = sorted(listed - stems)
            if absent:
                raise SegtrainError(
                    f"split list {list_path} names {len(absent)} images that are not in {images} "
                    f"(e.g. {', '.join(absent[:3])}); fix the list or restore the images"
                )
            files = [p for p in files if p.stem in listed]
        elif not split_dirs:
            files = self._holdout(files)
        return self.pair_files(files, lambda image: masks / f"{image.stem}{self.mask_suffix}")

    def _holdout(self, files: list[Path]) -> list[Path]:
        if self.split == "all":
            return files
        if self.split not in ("train", "val"):
            raise SegtrainError(
                f"split '{self.split}' has no list {self.root / (self.split + '.txt')} and no "
                f"{self.images_dir}/{self.split}/ folder; use train, val or all, or add the list"
            )
        if not 0 < self.val_fraction < 1:
            raise SegtrainError(f"data.dataset.val_fraction={self.val_fraction} must be in (0, 1)")
        every = max(2, round(1 / self.val_fraction))
        return [p for i, p in enumerate(files) if (i % every == 0) == (self.split == "val")]
