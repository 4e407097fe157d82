"""Panoptic annotations in the COCO panoptic format (Kirillov et al., "Panoptic Segmentation", CVPR 2019;
cocodataset.org/#format-data): a json of ``images``, ``categories`` (with ``isthing``) and one
``annotations`` entry per image, whose ``segments_info`` list the segments of a PNG that stores each
pixel's segment id as R + 256 G + 256^2 B (0: unlabelled).

COCO publishes annotations/panoptic_{train,val}2017.json with annotations/panoptic_{split}2017/*.png;
for Cityscapes, cityscapesscripts' ``createPanopticImgs`` writes gtFine/cityscapes_panoptic_{split}.json
and gtFine/cityscapes_panoptic_{split}/ from the gtFine instance ids.

Items: ``{"image": uint8 [C,H,W], "semantic": uint8 [H,W] (the class index in data.classes of each pixel,
``ignore_index`` on unlabelled ones), "boxes", "labels", "masks"`` (the thing segments that are not crowd
regions, labels 1..T in the order of data.things) ``, "meta"}``; ``meta`` holds what the evaluation
scores against: ``image_id``, ``name``, ``size``, ``segments`` (the json's ``segments_info``) and
``panoptic`` (the PNG's ids, HxW int32, untransformed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from segtrain.data.datasets.coco_instances import read_json, transform_instances
from segtrain.data.io import read_image, read_mask
from segtrain.errors import SegtrainError

#: The id of unlabelled pixels in panoptic PNGs.
VOID = 0


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """The segment ids of a panoptic PNG: R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """The RGB a panoptic PNG stores for segment ids (HxW -> HxWx3 uint8)."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


PANOPTIC_PREPARATION = (
    "cityscapesscripts' createPanopticImgs writes them for Cityscapes "
    "(python -m cityscapesscripts.preparation.createPanopticImgs --dataset-folder <root>/gtFine); COCO "
    "publishes panoptic_annotations_trainval2017.zip"
)


def load_panoptic_json(path: Path, key: str = "data.annotation_file") -> dict:
    """A COCO panoptic json, checked for what every later step relies on."""
    if not path.is_file():
        raise SegtrainError(
            f"{key}: the panoptic annotation file {path} does not exist; {PANOPTIC_PREPARATION}"
        )
    data = read_json(path, key)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(f), list) for f in ("annotations", "categories")
    ):
        raise SegtrainError(
            f"{key}: {path} has no 'annotations' and 'categories' lists; it is not a panoptic file"
        )
    first = data["annotations"][0] if data["annotations"] else {}
    if "segments_info" not in first:
        kind = (
            "a COCO instances file (its annotations are objects)"
            if "bbox" in first
            else "not a panoptic file"
        )
        raise SegtrainError(
            f"{key}: {path} is {kind}: panoptic annotations list 'segments_info' per image. Pass the "
            f"panoptic json (panoptic_{{split}}2017.json), or use task=instance for instance files"
        )
    return data


class CocoPanoptic(Dataset):
    """``root``/``annotation_file`` (the json), ``root``/``segment_dir`` (the PNGs) and ``root``/``image_dir``
    (the images: ``{split}``, the image's ``{file_name}`` and ``{city}``, the part of the file name before
    its first '_', are filled in).

    ``classes``/``category_ids``: the config's classes and their json ids, which must be the file's
    categories; ``things``: the classes that have instances (the file's ``isthing``).
    """

    layout = (
        "root/annotations/panoptic_{split}2017.json, root/annotations/panoptic_{split}2017/*.png and "
        "root/{split}2017/*.jpg (COCO); root/gtFine/cityscapes_panoptic_{split}.json and its folder beside "
        "root/leftImg8bit/ (Cityscapes, written by cityscapesscripts' createPanopticImgs)"
    )

    def __init__(
        self,
        root: str,
        split: str,
        classes: Sequence[str],
        category_ids: Sequence[int],
        things: Sequence[str],
        annotation_file: str = "annotations/panoptic_{split}2017.json",
        segment_dir: str = "annotations/panoptic_{split}2017",
        image_dir: str = "{split}2017/{file_name}",
        ignore_index: int = 255,
        in_channels: int = 3,
        transform: A.Compose | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.annotation_path = self.root / annotation_file.format(split=split)
        self.segment_dir = self.root / segment_dir.format(split=split)
        self.image_template = image_dir
        self.ignore_index = ignore_index
        self.in_channels = in_channels
        self.transform = transform
        self.data = load_panoptic_json(self.annotation_path)
        self.category_ids = [int(i) for i in category_ids]
        self.check_categories(list(classes), list(things))
        self.class_of = {category: index for index, category in enumerate(self.category_ids)}
        thing_ids = [self.category_ids[list(classes).index(name)] for name in things]
        self.label_of = {category: index + 1 for index, category in enumerate(thing_ids)}
        images = {image["id"]: image for image in self.data.get("images", [])}
        self.annotations = sorted(self.data["annotations"], key=lambda a: str(a["image_id"]))
        self.images = [images.get(a["image_id"], {"id": a["image_id"]}) for a in self.annotations]
        if not self.segment_dir.is_dir():
            raise SegtrainError(
                f"data.segment_dir: the folder of panoptic PNGs {self.segment_dir} does not exist; "
                f"{PANOPTIC_PREPARATION}"
            )

    def check_categories(self, classes: list[str], things: list[str]) -> None:
        found = {int(c["id"]): c for c in self.data["categories"]}
        if sorted(found) != sorted(self.category_ids):
            named = [(i, found[i].get("name")) for i in sorted(found)][:20]
            raise SegtrainError(
                f"{self.annotation_path} has categories {named}, but data.category_ids="
                f"{self.category_ids[:20]} ({classes[:20]}). List the file's categories in data.classes and "
                "data.category_ids"
            )
        marked = sorted(found[i].get("name", str(i)) for i in self.category_ids if found[i].get("isthing"))
        listed = sorted(found[self.category_ids[classes.index(name)]].get("name", name) for name in things)
        if marked != listed:
            raise SegtrainError(
                f"{self.annotation_path} marks {marked} as things (isthing: 1), but data.things={things}; "
                "list the file's thing classes in data.things"
            )

    def __len__(self) -> int:
        return len(self.annotations)

    def image_path(self, index: int) -> Path:
        annotation, info = self.annotations[index], self.images[index]
        file_name = info.get("file_name") or Path(annotation["file_name"]).with_suffix(".jpg").name
        fields = {"split": self.split, "file_name": file_name, "city": file_name.split("_")[0]}
        return self.root / self.image_template.format(**fields)

    def segments(self, index: int) -> tuple[np.ndarray, list[dict]]:
        """The PNG's segment ids (HxW int32) and the json's segments of image ``index``."""
        annotation = self.annotations[index]
        path = self.segment_dir / annotation["file_name"]
        if not path.is_file():
            raise SegtrainError(
                f"the panoptic PNG {path} of image {annotation['image_id']} ({self.annotation_path}) is "
                f"missing; restore it or regenerate the folder ({PANOPTIC_PREPARATION})"
            )
        return rgb_to_id(read_mask(path, colors=True)).astype(np.int32), list(annotation["segments_info"])

    def __getitem__(self, index: int) -> dict:
        path = self.image_path(index)
        image = read_image(path, self.in_channels)
        ids, segments = self.segments(index)
        if ids.shape != image.shape[:2]:
            raise SegtrainError(
                f"{path} is {image.shape[1]}x{image.shape[0]} pixels but its panoptic PNG "
                f"{self.annotations[index]['file_name']} is {ids.shape[1]}x{ids.shape[0]}; re-export one of "
                "them"
            )
        semantic = np.full(ids.shape, self.ignore_index, np.uint8)
        boxes, labels, masks = [], [], []
        for segment in segments:
            region = ids == segment["id"]
            category = segment["category_id"]
            if category in self.class_of:
                semantic[region] = self.class_of[category]
            if category not in self.label_of or segment.get("iscrowd", 0) or not region.any():
                continue
            rows, columns = np.nonzero(region)
            boxes.append([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
            labels.append(self.label_of[category])
            masks.append(region.astype(np.uint8))
        item = transform_instances(self.transform, image, boxes, labels, masks, semantic)
        annotation = self.annotations[index]
        item["meta"] = {
            "image_id": annotation["image_id"],
            "name": Path(annotation["file_name"]).stem,
            "size": ids.shape,
            "segments": segments,
            "panoptic": torch.from_numpy(ids),
        }
        return item
