"""The dataset contract every reader follows.

An item is ``{"image": uint8 CxHxW, "mask": uint8 HxW (ignore_index = 255), "meta": {...}}``.
Images and masks stay uint8 until they reach the device, where the task normalises them:
4x (image) and 8x (mask) less to collate, pin and copy than float32 / int64.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from segtrain.data.io import check_pair, read_image, read_mask
from segtrain.errors import SegtrainError


class SegmentationDataset(Dataset):
    """Base of every reader: subclasses implement ``__len__`` and ``load``."""

    def __init__(
        self,
        split: str,
        num_classes: int,
        ignore_index: int = 255,
        in_channels: int = 3,
        transform: Callable | None = None,
    ):
        self.split = split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.in_channels = in_channels
        self.transform = transform

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """uint8 HxWxC image, uint8 HxW mask of ids, and meta (``name`` at least)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        image, mask, meta = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "meta": meta,
        }


class FileDataset(SegmentationDataset):
    """Readers of image / mask file pairs under ``root``; subclasses list them in ``find_samples``."""

    #: Expected directory layout, shown when data.root or a split does not match it.
    layout = ""
    #: Whether masks are palette PNGs whose indices are the class ids (VOC).
    palette_masks = False

    def __init__(self, root: str | Path, split: str, num_classes: int, **kwargs):
        super().__init__(split, num_classes, **kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise SegtrainError(f"data.root={self.root} does not exist. Expected layout: {self.layout}")
        self.samples: list[tuple[Path, Path]] = self.find_samples()
        if not self.samples:
            raise SegtrainError(f"split '{split}' under {self.root} is empty. Expected layout: {self.layout}")

    def find_samples(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def read_split_list(self, path: Path) -> list[str]:
        if not path.is_file():
            raise SegtrainError(
                f"split list {path} does not exist (split '{self.split}'). Expected layout: {self.layout}"
            )
        names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise SegtrainError(f"split list {path} is empty. Expected layout: {self.layout}")
        return names

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path, self.in_channels)
        mask = read_mask(mask_path, palette_ok=self.palette_masks)
        check_pair(image, mask, mask_path, self.num_classes, self.ignore_index)
        return image, mask, {"name": image_path.stem, "path": str(image_path)}


def pad_collate(batch: Sequence[dict], ignore_index: int = 255) -> dict:
    """Stack items, padding images with 0 and masks with ``ignore_index`` to the largest size.

    Validation images differ in size (VOC); padding lets them run batched, and the padded
    pixels are ignored by the metrics.
    """
    height = max(item["image"].shape[-2] for item in batch)
    width = max(item["image"].shape[-1] for item in batch)
    images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], height, width))
    masks = batch[0]["mask"].new_full((len(batch), height, width), ignore_index)
    for i, item in enumerate(batch):
        h, w = item["mask"].shape
        images[i, :, :h, :w] = item["image"]
        masks[i, :h, :w] = item["mask"]
    return {"image": images, "mask": masks, "meta": [item["meta"] for item in batch]}
