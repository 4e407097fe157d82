"""The LightningDataModule of instance datasets: batches are lists, since images keep their own sizes
(the detector resizes them itself) and each holds its own number of instances."""

from __future__ import annotations

from typing import Sequence

from pytorch_lightning.utilities import rank_zero_warn

from segtrain.data.datamodule import SegDataModule
from segtrain.data.instance_checks import scan_instances
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
    options = ("name", "annotation_check")
    #: annotation_file and image_dir reach the reader through data.dataset's interpolations.
    describing = (*SegDataModule.describing, "annotation_file", "image_dir")

    def __init__(self, *parts, annotation_check: str = "error", **options):
        super().__init__(*parts, label_check_batches=0, **options)
        if annotation_check not in ("error", "warn"):
            raise SegtrainError(
                f"data.annotation_check={annotation_check!r} is invalid: it must be 'error' (stop on "
                "annotations that would make the numbers wrong) or 'warn' (train anyway)"
            )
        self.annotation_check = annotation_check
        ids = self.description.category_ids or []
        if len(ids) != len(self.classes):
            raise SegtrainError(
                f"data.category_ids has {len(ids)} ids for the {len(self.classes)} data.classes"
            )

    @staticmethod
    def pipelines(train: Sequence, val: Sequence, seed: int | None, original_masks: bool) -> dict:
        return {"train": compose(train, seed, boxes=True), "val": compose(val, seed, boxes=True)}

    @property
    def category_ids(self) -> list[int]:
        return self.description.category_ids

    @property
    def num_classes(self) -> int:
        """The categories and the background torchvision's detectors count as class 0."""
        return len(self.classes) + 1

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
            self.check_annotations(self.datasets[stage])
        return self.datasets[stage]

    def check_annotations(self, dataset) -> None:
        """check-data's json scan (not the images, not the masks) of a split about to be read: annotations
        that would make the numbers wrong stop the run before its first step, unless
        ``data.annotation_check=warn``, which trains on without them."""
        if getattr(dataset, "data", None) is None:
            return
        report = scan_instances(
            dataset.annotation_path,
            dataset.image_dir,
            check_images=False,
            check_masks=False,
            data=dataset.data,
        )
        if not report.errors:
            return
        findings = " ".join(str(finding) for finding in report.errors)
        if self.annotation_check == "error":
            raise SegtrainError(
                f"data={self.name}: {findings} (segtrain check-data lists every case; "
                "data.annotation_check=warn trains on without those annotations)"
            )
        rank_zero_warn(f"data={self.name}: {findings} Training on without those annotations.")

    def collate(self):
        return list_collate
