"""Instance annotations in COCO's json format: COCO itself, and a user's own COCO-format files.

Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014 (cocodataset.org/#format-data).
Polygons and RLE (``iscrowd`` regions are RLE) decode through pycocotools. Category ids map to
contiguous labels 1..K in the order of their ids, label 0 being the background torchvision's detectors
count. Crowd regions are left out of training targets, as torchvision's and detectron2's COCO readers
do; evaluation keeps them in the ground truth, where COCOeval ignores detections that fall on them.

Items: ``{"image": uint8 [C,H,W], "boxes": float [N,4] xyxy, "labels": int64 [N], "masks": uint8 [N,H,W],
"meta": {"image_id", "name", "size"}}``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Sequence

import albumentations as A
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from segtrain.data.io import read_image
from segtrain.errors import SegtrainError


def read_json(path: Path, key: str):
    """The json at ``path``; one error naming ``key`` where it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise SegtrainError(f"{key}: {path} is not a readable json file ({err}); re-export it") from None


def load_coco_json(path: Path, key: str = "data.annotation_file") -> dict:
    """A COCO instances json, checked for what every later step relies on."""
    if not path.is_file():
        raise SegtrainError(
            f"{key}: the annotation file {path} does not exist. COCO publishes annotations/"
            "instances_{train,val}2017.json under the dataset root; point data.root (or "
            "data.annotation_file) "
            "at it"
        )
    data = read_json(path, key)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise SegtrainError(
            f"{key}: {path} has no 'annotations' list, so it is not a COCO instances file (captions and "
            "image-info files have none). Pass the instances_*.json, or convert label images with "
            "scripts/labels_to_coco.py"
        )
    for field in ("images", "categories"):
        if not isinstance(data.get(field), list):
            raise SegtrainError(f"{key}: {path} has no '{field}' list; a COCO instances file needs one")
    return data


def short_polygon(polygon: list) -> bool:
    """Fewer than 3 x,y points (or an odd count), which pycocotools reads as garbage or crashes on."""
    return len(polygon) < 6 or len(polygon) % 2 == 1


def empty_mask(annotation: dict) -> bool:
    """No segmentation, or an area of 0: nothing for the mask head to learn, nothing COCOeval can score."""
    return not annotation.get("segmentation") or annotation.get("area", 1) == 0


def looks_xyxy(bbox: Sequence[float], width: int, height: int) -> bool:
    """A box that reaches past its image as x, y, width, height but not as x1, y1, x2, y2."""
    x, y, w, h = (float(v) for v in bbox)
    return bool(width and height) and (x + w > width + 1 or y + h > height + 1) and w > x and h > y


def check_polygons(data: dict, path: Path, key: str = "data.annotation_file") -> None:
    """pycocotools reads a polygon of fewer than 3 points as garbage or crashes on it: refused by name."""
    for annotation in data["annotations"]:
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list):
            for polygon in segmentation:
                if short_polygon(polygon):
                    raise SegtrainError(
                        f"{key}: {path}, annotation id {annotation.get('id')} "
                        f"(image {annotation.get('image_id')}) "
                        f"has a polygon of {len(polygon)} numbers; a polygon needs at least 3 x,y points. "
                        "Drop that polygon or fix the exporter that wrote it (segtrain check-data lists "
                        "them all)"
                    )


def ground_truth(data: dict, image_ids: Sequence[int] | None = None):
    """A pycocotools ``COCO`` of ``data`` (only ``image_ids`` when given), without its loading chatter."""
    from pycocotools.coco import COCO

    if any(not annotation.get("segmentation") for annotation in data["annotations"]):
        # pycocotools cannot score an empty mask (data.annotation_check=warn trains on without them too).
        data = {**data, "annotations": [a for a in data["annotations"] if a.get("segmentation")]}
    if image_ids is not None:
        wanted = set(image_ids)
        data = {
            **data,
            "images": [image for image in data["images"] if image["id"] in wanted],
            "annotations": [a for a in data["annotations"] if a["image_id"] in wanted],
        }
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 HxW of a polygon list, an uncompressed RLE (counts as a list) or a compressed one."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(np.uint8)


class CocoInstances(Dataset):
    """``root``/``annotation_file`` and ``root``/``image_dir``, both with ``{split}`` filled in.

    ``category_ids``: the json category ids the config's ``classes`` name, in label order 1..K; the file's
    categories must be those (a model's outputs mean nothing under another mapping).
    """

    layout = (
        "root/annotations/instances_{split}2017.json and root/{split}2017/*.jpg, as cocodataset.org "
        "publishes them (data=instances_folder: data.annotation_file and data.image_dir name your own)"
    )

    def __init__(
        self,
        root: str,
        split: str,
        classes: Sequence[str],
        category_ids: Sequence[int],
        annotation_file: str = "annotations/instances_{split}2017.json",
        image_dir: str = "{split}2017",
        in_channels: int = 3,
        transform: A.Compose | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.annotation_path = self.root / annotation_file.format(split=split)
        self.image_dir = self.root / image_dir.format(split=split)
        self.in_channels = in_channels
        self.transform = transform
        self.data = load_coco_json(self.annotation_path)
        check_polygons(self.data, self.annotation_path)
        self.category_ids = [int(i) for i in category_ids]
        found = sorted(int(c["id"]) for c in self.data["categories"])
        if found != sorted(self.category_ids):
            names = {int(c["id"]): c.get("name", "?") for c in self.data["categories"]}
            raise SegtrainError(
                f"{self.annotation_path} has categories {[(i, names[i]) for i in found][:20]}, but "
                f"data.category_ids={self.category_ids} ({list(classes)[:20]}). List the file's categories "
                "in "
                "data.classes and data.category_ids (data=instances_folder reads them from the file)"
            )
        self.label_of = {category: index + 1 for index, category in enumerate(self.category_ids)}
        self.images = sorted(self.data["images"], key=lambda image: image["id"])
        self.annotations: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for annotation in self.data["annotations"]:
            self.annotations.setdefault(annotation["image_id"], []).append(annotation)

    def __len__(self) -> int:
        return len(self.images)

    def ground_truth(self):
        """What COCOeval scores against: the file's annotations, crowd regions included."""
        return ground_truth(self.data)

    def __getitem__(self, index: int) -> dict:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = read_image(path, self.in_channels)
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise SegtrainError(
                f"{path} is {width}x{height} pixels, but {self.annotation_path} says "
                f"{info['width']}x{info['height']}: its masks and boxes would not fit. Re-export the image "
                "or fix the json's width and height (EXIF-rotated photos are a common cause; segtrain "
                "check-data lists every such image)"
            )
        boxes, labels, masks = [], [], []
        for annotation in self.annotations[info["id"]]:
            x, y, w, h = annotation["bbox"]
            label = self.label_of.get(annotation.get("category_id"))
            if (
                annotation.get("iscrowd", 0)
                or w <= 0
                or h <= 0
                or label is None
                or empty_mask(annotation)
                or looks_xyxy(annotation["bbox"], width, height)
            ):
                # Degenerate boxes give NaN box losses; these are what data.annotation_check=warn trains
                # without (segtrain check-data reports them).
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
            masks.append(decode_mask(annotation["segmentation"], height, width))
        item = transform_instances(self.transform, image, boxes, labels, masks)
        item["meta"] = {
            "image_id": int(info["id"]),
            "name": Path(info["file_name"]).stem,
            "size": (height, width),
        }
        return item


def transform_instances(
    transform: A.Compose | None,
    image: np.ndarray,
    boxes: list,
    labels: list,
    masks: list,
    semantic: np.ndarray | None = None,
) -> dict:
    """Applies ``transform`` to the image, boxes and masks (and a ``semantic`` class map, for panoptic
    items) together; boxes that leave the image (or shrink below albumentations' ``min_area``) are dropped
    with their masks and labels."""
    height, width = image.shape[:2]
    extra = {} if semantic is None else {"mask": semantic}
    if transform is not None:
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height])
        out = transform(
            image=image, masks=masks, bboxes=boxes, labels=labels, indices=list(range(len(labels))), **extra
        )
        image = out["image"]
        if semantic is not None:
            semantic = out["mask"]
        kept = [int(i) for i in out["indices"]]
        boxes, labels = np.asarray(out["bboxes"], np.float32).reshape(-1, 4), [labels[i] for i in kept]
        masks = [np.asarray(out["masks"][i]) for i in kept]
    height, width = image.shape[:2]
    item = {} if semantic is None else {"semantic": torch.from_numpy(np.ascontiguousarray(semantic))}
    return item | {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "boxes": torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros(0, height, width, dtype=torch.uint8),
    }
