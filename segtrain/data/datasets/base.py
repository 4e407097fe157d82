"""The dataset contract every reader follows.

An item is ``{"image": uint8 CxHxW, "mask": uint8 HxW (ignore_index = 255), "meta": {...}}``. Evaluation
items (``original_mask``) keep the mask as annotated whatever the transforms do to the image; their
meta says where the original image lies in the transformed one (``region``) and its ``size``, so that
predictions are scored at the annotation's own resolution (``segtrain.inference.to_original_size``).
Images and masks stay uint8 until they reach the device, where the task normalises them:
4x (image) and 8x (mask) less to collate, pin and copy than float32 / int64. Volumes (3D
medical images) are CxDxHxW float32 intensities that their reader has already normalised,
since CT and MRI need per-modality normalisation that a mean and std cannot express.

A reader returns the mask values as published (``read_raw``); its ``LabelEncoding`` turns them
into class ids, and ``check_pair`` stops on values the config cannot explain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from segtrain.data.checks import check_pair
from segtrain.data.encoding import LabelEncoding
from segtrain.data.io import read_image, read_mask
from segtrain.data.superpixels import slic_superpixels
from segtrain.data.transforms import transform_item
from segtrain.data.weight_map import unet_weight_map
from segtrain.errors import SegtrainError
from segtrain.visualize import palette_image


class SegmentationDataset(Dataset):
    """Base of every reader: subclasses implement ``__len__`` and ``load``."""

    def __init__(
        self,
        split: str,
        num_classes: int,
        ignore_index: int = 255,
        in_channels: int = 3,
        transform: Callable | None = None,
        encoding: LabelEncoding | None = None,
        weight_map: dict | None = None,
        original_mask: bool = False,
        superpixels: dict | None = None,
    ):
        self.split = split
        #: SLIC settings for the graph models' superpixels, computed here in the workers (or None).
        self.superpixels = superpixels
        self.original_mask = original_mask
        self.weight_map = weight_map
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.in_channels = in_channels
        self.transform = transform
        self.encoding = encoding or LabelEncoding(ignore_index)
        #: Files found without their partner; readers that list directories fill it, check-data reports it.
        self.unpaired: list[Path] = []

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Channel-last image, the mask as stored, and meta (``name`` at least)."""
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        image, raw, meta = self.read_raw(index)
        mask = self.encoding(raw)
        check_pair(
            image,
            mask,
            meta.get("mask_path", meta["name"]),
            self.num_classes,
            self.ignore_index,
            self.encoding.identity,
        )
        return image, mask, meta

    def save_prediction(
        self, ids: np.ndarray, meta: dict, directory: Path, palette: Sequence[Sequence[int]]
    ) -> Path:
        """Writes class ids (at the image's own size) in the dataset's published encoding, named after
        the image: the official tools (Cityscapes') match files by name."""
        path = directory / f"{meta['name']}.png"
        self.prediction_image(ids, palette).save(path)
        return path

    def prediction_image(self, ids: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
        return Image.fromarray(self.encoding.inverse(ids))

    def __getitem__(self, index: int) -> dict:
        image, mask, meta = self.load(index)
        image, mask, region = transform_item(self.transform, image, mask, self.original_mask)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "meta": {**meta, "size": tuple(mask.shape), "region": region},
        }
        if self.weight_map is not None:
            item["weight"] = torch.from_numpy(
                unet_weight_map(mask, ignore_index=self.ignore_index, **self.weight_map)
            )
        if self.superpixels is not None:
            item["superpixels"] = torch.from_numpy(slic_superpixels(image, **self.superpixels))
        return item


class FileDataset(SegmentationDataset):
    """Readers of image / mask file pairs under ``root``; subclasses list them in ``find_samples``."""

    #: Expected directory layout, shown when data.root or a split does not match it.
    layout = ""
    #: Whether masks are palette PNGs whose indices are the class ids (VOC).
    palette_masks = False

    def __init__(
        self, root: str | Path, split: str, num_classes: int, palette_masks: bool | None = None, **kwargs
    ):
        super().__init__(split, num_classes, **kwargs)
        self.root = Path(root)
        if palette_masks is not None:
            self.palette_masks = palette_masks
        if not self.root.is_dir():
            raise SegtrainError(f"data.root={self.root} does not exist. Expected layout: {self.layout}")
        self.samples: list[tuple[Path, Path]] = self.find_samples()
        if not self.samples:
            raise SegtrainError(f"split '{split}' under {self.root} is empty. Expected layout: {self.layout}")
        missing = [path for pair in self.samples for path in pair if not path.is_file()]
        if missing:
            raise SegtrainError(
                f"split '{split}' under data.root={self.root} names {len(missing)} files that do not exist "
                f"(e.g. {', '.join(str(path) for path in missing[:3])}). Restore them or remove them from "
                "the split list; `segtrain check-data` lists every problem of a split. Expected layout: "
                f"{self.layout}"
            )

    def find_samples(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def pair_files(self, images: Iterable[Path], mask_for: Callable[[Path], Path]) -> list[tuple[Path, Path]]:
        """(image, mask) for each image whose mask exists; the others go to ``unpaired``."""
        samples = []
        for image in images:
            mask = mask_for(image)
            if mask.is_file():
                samples.append((image, mask))
            else:
                self.unpaired.append(image)
        return samples

    def read_split_list(self, path: Path) -> list[list[str]]:
        """The whitespace-separated fields of each line (a name, or image and mask paths)."""
        if not path.is_file():
            raise SegtrainError(
                f"split list {path} does not exist (split '{self.split}'). Expected layout: {self.layout}"
            )
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            raise SegtrainError(f"split list {path} is empty. Expected layout: {self.layout}")
        return rows

    def resolve_listed(self, listed: list[str], list_path: Path) -> list[Path]:
        """Paths from a split list, resolved against data.root.

        Published lists often hold absolute paths of the authors' machine (SegNet's CamVid lists
        start with /SegNet/CamVid/). The shortest tail of the first entry that exists under the
        root fixes how many leading parts to drop, for every entry.
        """
        parts = Path(listed[0]).parts
        for skip in range(len(parts)):
            if self.root.joinpath(*parts[skip:]).exists():
                return [self.root.joinpath(*Path(entry).parts[skip:]) for entry in listed]
        raise SegtrainError(
            f"split list {list_path}: no tail of its first entry {listed[0]} exists under "
            f"data.root={self.root}. Expected layout: {self.layout}"
        )

    def __len__(self) -> int:
        return len(self.samples)

    def prediction_image(self, ids: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
        if self.palette_masks:
            return palette_image(self.encoding.inverse(ids), palette)
        return super().prediction_image(ids, palette)

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path, self.in_channels)
        mask = read_mask(mask_path, palette_ok=self.palette_masks, colors=self.encoding.uses_colors)
        return image, mask, {"name": image_path.stem, "path": str(image_path), "mask_path": str(mask_path)}


class ImagesAnnotationsDataset(FileDataset):
    """``images/<split dir>/*.jpg`` beside ``annotations/<split dir>/<same stem>.png``
    (ADE20K, COCO-Stuff)."""

    #: split name -> directory name, e.g. {"train": "training"}
    split_dirs: dict[str, str] = {}

    def find_samples(self) -> list[tuple[Path, Path]]:
        folder = self.split_dirs.get(self.split, self.split)
        return self.pair_files(
            sorted((self.root / "images" / folder).glob("*.jpg")),
            lambda image: self.root / "annotations" / folder / f"{image.stem}.png",
        )


def pad_collate(batch: Sequence[dict], ignore_index: int = 255) -> dict:
    """Stack items, padding images with 0 and masks with ``ignore_index`` to the largest size.

    Validation images differ in size (VOC); padding lets them run batched, and the padded
    pixels are ignored by the metrics. Images and masks are padded each to their own largest size,
    as evaluation masks keep the annotation's size. Works for HxW and DxHxW items alike.
    """
    image_size = [max(dims) for dims in zip(*(item["image"].shape[1:] for item in batch))]
    size = [max(dims) for dims in zip(*(item["mask"].shape for item in batch))]
    first = batch[0]
    images = first["image"].new_zeros((len(batch), first["image"].shape[0], *image_size))
    masks = first["mask"].new_full((len(batch), *size), ignore_index)
    weights = first["mask"].new_zeros((len(batch), *size), dtype=torch.float32) if "weight" in first else None
    for i, item in enumerate(batch):
        region = tuple(slice(0, n) for n in item["mask"].shape)
        images[(i, slice(None), *(slice(0, n) for n in item["image"].shape[1:]))] = item["image"]
        masks[(i, *region)] = item["mask"]
        if weights is not None:
            weights[(i, *region)] = item["weight"]
    collated = {"image": images, "mask": masks, "meta": [item["meta"] for item in batch]}
    if weights is not None:
        collated["weight"] = weights
    if "superpixels" in first:
        superpixels = first["superpixels"].new_full((len(batch), *image_size), -1)
        for i, item in enumerate(batch):
            superpixels[(i, *(slice(0, n) for n in item["superpixels"].shape))] = item["superpixels"]
        collated["superpixels"] = superpixels
    return collated
