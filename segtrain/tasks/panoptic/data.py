"""The panoptic data module: the instance module's list batches over a panoptic reader
(``segtrain.data.datasets.coco_panoptic``), whose items carry each pixel's class besides the things."""

from __future__ import annotations

from segtrain.data.datamodule import SegDataModule
from segtrain.data.instances import InstanceDataModule, list_collate
from segtrain.errors import SegtrainError


class PanopticDataModule(SegDataModule):
    """``dataset``: a partial taking ``split``, ``classes``, ``category_ids``, ``things``, ``ignore_index``,
    ``in_channels`` and ``transform``. ``things``: the classes with instances; ``num_classes`` counts every
    class (no background: every pixel is a thing or stuff, or unlabelled)."""

    task = "panoptic"
    options = ("name",)
    #: The reader's paths reach it through data.dataset's interpolations.
    describing = (*SegDataModule.describing, "annotation_file", "segment_dir", "image_dir")

    #: Boxes and masks move with the image, as the instance task's.
    pipelines = InstanceDataModule.pipelines

    def __init__(self, *parts, **options):
        super().__init__(*parts, label_check_batches=0, **options)
        things = self.description.things or []
        unknown = [name for name in things if name not in self.classes]
        if not things or unknown:
            raise SegtrainError(
                f"data.things={things} must name some of data.classes ({self.classes[:20]}): the classes "
                "that have instances"
            )
        ids = self.description.category_ids or []
        if len(ids) != len(self.classes):
            raise SegtrainError(
                f"data.category_ids has {len(ids)} ids for the {len(self.classes)} data.classes"
            )

    @property
    def category_ids(self) -> list[int]:
        return self.description.category_ids

    def reader(self, split: str, **options):
        return self.dataset_factory(
            split=split,
            classes=self.classes,
            category_ids=self.category_ids,
            things=self.description.things,
            ignore_index=self.ignore_index,
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
