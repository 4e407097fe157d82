"""The LightningDataModule of instance datasets: batches are lists, since images keep their own sizes
(the detector resizes them itself) and each holds its own number of instances."""

from __future__ import annotations

from typing import Sequence

from segtrain.data.datamodule import SegDataModule
from segtrain.data.transforms import compose
from segtrain.errors import SegtrainError


def list_collate(batch: Sequence[dict]) -> dict:
    return {key: [item[key] for item in batch] for key in batch[0]}


class InstanceDataModule(SegDataModule):
    """Train / val / eval loaders over a COCO-format reader (``dataset``: a partial taking ``split``,
    ``classes``, ``category_ids``, ``in_channels`` and ``transform``).

    ``category_ids``: the json's category id of each class, in label order 1..K. ``num_classes`` counts
    the background too (K + 1), as torchvision's detectors do. ``train_transforms`` move boxes and masks
    with the image; ``val_transforms`` may not change the geometry, since COCO's evaluation scores boxes
    and masks at each image's own size (the detector's ``min_size``/``max_size`` resize is undone by it).
    """

    task = "instance"

    def __init__(self, category_ids: Sequence[int], annotation_file: str = "", image_dir: str = "", **data):
        # annotation_file and image_dir reach the reader through data.dataset's interpolations.
        super().__init__(label_check_batches=0, **data)
        self.category_ids = [int(i) for i in category_ids]
        if len(self.category_ids) != len(self.classes):
            raise SegtrainError(
                f"data.category_ids has {len(self.category_ids)} ids for the {len(self.classes)} data.classes"
            )
        self.transforms = {
            "train": compose(data.get("train_transforms"), data.get("seed"), boxes=True),
            "val": compose(data.get("val_transforms"), data.get("seed"), boxes=True),
        }

    def reader(self, split: str, **options):
        return self.dataset_factory(
            split=split,
            classes=self.classes,
            category_ids=self.category_ids,
            in_channels=self.in_channels,
            **options,
        )

    def build(self, stage: str):
        if stage not in self.datasets:
            transform = self.transforms["train" if stage == "train" else "val"]
            self.datasets[stage] = self.reader(self.splits[stage], transform=transform)
        return self.datasets[stage]

    def collate(self):
        return list_collate
