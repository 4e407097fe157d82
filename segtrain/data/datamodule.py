"""The LightningDataModule every data config names, built from its parts (``SegDataModule.from_config``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import Callable, Sequence

import albumentations as A
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from segtrain.data.checks import diagnose_binary
from segtrain.data.datasets.base import SegmentationDataset, pad_collate
from segtrain.data.description import DatasetDescription
from segtrain.data.encoding import LabelEncoding
from segtrain.data.transforms import compose, seed_worker
from segtrain.errors import SegtrainError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Loading:
    """How the loaders batch and fetch: ``val_batch_size`` None is ``batch_size``."""

    batch_size: int = 8
    val_batch_size: int | None = None
    num_workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True


LOADING_KEYS = tuple(field.name for field in fields(Loading))
#: The keys ``SegDataModule.from_config`` makes the description, splits, encoding and pipelines of.
CONFIG_KEYS = (
    "dataset",
    "classes",
    "palette",
    "mean",
    "std",
    "ignore_index",
    "category_ids",
    "things",
    "train_split",
    "val_split",
    "split",
    "label_map",
    "reduce_zero_label",
    "color_map",
    "seed",
    "train_transforms",
    "val_transforms",
)


def build_datamodule(data: DictConfig, score_resolution: str = "original") -> pl.LightningDataModule:
    """The module a data config names (``data._target_``), made from the config's keys; a user's own
    LightningDataModule that is not a ``SegDataModule`` is instantiated with them as they are."""
    cls = get_class(data._target_)
    if not issubclass(cls, SegDataModule):
        return instantiate(data, score_resolution=score_resolution)
    return cls.from_config(data, score_resolution)


class SegDataModule(pl.LightningDataModule):
    """Train / val / eval loaders over one dataset reader, built from parts: what the dataset is
    (``description``), which split each stage reads (``splits``: train, val, and ``eval`` for eval and
    check-data), how batches are loaded (``loading``), the augmentation pipelines (``transforms``: train,
    val) and how the published masks encode class ids (``encoding``, see ``LabelEncoding``).
    ``from_config`` makes them from a data config's keys, which stay one flat node for users.

    ``dataset`` is a partial of a reader class taking ``split``, ``num_classes``, ``ignore_index``,
    ``in_channels``, ``transform`` and ``encoding``.

    ``weight_map``: the U-Net paper's per-pixel loss weights (``unet_weight_map`` arguments),
    computed for training samples in the workers; ``loss=unet_weight_map`` sets it.

    ``superpixels``: SLIC settings (``n_segments``, ``compactness``) of the graph models' nodes, computed for
    training samples in the workers (batches carry them as ``superpixels``, -1 in padding);
    ``model=graph_lstm`` sets it.

    ``original_masks`` (``inference.score_resolution=original``, which the semantic task passes): validation
    and evaluation masks stay as annotated, so predictions are scored at each image's own size whatever
    ``val_transforms`` do; False transforms them with the image.

    The first ``label_check_batches`` training batches are checked for the {0, 255} binary-mask
    slip that per-image checks cannot see, since one image may rightly hold background only.
    """

    task = "semantic"
    #: Data config keys the constructor takes as they are (besides the parts ``from_config`` makes).
    options = ("name", "label_check_batches", "weight_map", "superpixels")
    #: Data config keys that only describe: read through interpolations (``data.dataset.root``,
    #: ``inference.crop_size``) or by the checks (``num_classes``, ``in_channels``), not by the module.
    describing = ("root", "crop_size", "num_classes", "in_channels")

    def __init__(
        self,
        dataset: Callable[..., SegmentationDataset],
        description: DatasetDescription,
        splits: dict[str, str],
        loading: Loading,
        transforms: dict[str, A.Compose | None],
        encoding: LabelEncoding,
        name: str = "",
        label_check_batches: int = 20,
        weight_map: dict | None = None,
        superpixels: dict | None = None,
        original_masks: bool = True,
    ):
        super().__init__()
        self.dataset_factory = dataset
        self.description = description
        self.name = name
        self.splits = dict(splits)
        self.loading = loading
        self.pin_memory = loading.pin_memory and torch.cuda.is_available()
        self.original_masks = original_masks
        self.transforms = transforms
        self.encoding = encoding
        self.label_check_batches = label_check_batches
        self.weight_map = dict(weight_map) if weight_map else None
        self.superpixels = dict(superpixels) if superpixels else None
        self.labels_seen: torch.Tensor | None = None
        self.datasets: dict[str, SegmentationDataset] = {}

    @classmethod
    def from_config(cls, data: DictConfig, score_resolution: str = "original") -> SegDataModule:
        """The module of a data config (its ``_target_`` is ``cls``): the flat keys made into parts. A key
        the module does not read is refused by name: it would otherwise be silently ignored."""
        values = instantiate(data, _target_="builtins.dict")
        take = values.pop
        original_masks = score_resolution == "original"
        palette = [list(color) for color in take("palette")]
        ignore_index = take("ignore_index", 255)
        category_ids, things = take("category_ids", None), take("things", None)
        description = DatasetDescription(
            task=cls.task,
            classes=[str(name) for name in take("classes")],
            palette=palette,
            mean=[float(value) for value in take("mean", IMAGENET_MEAN)],
            std=[float(value) for value in take("std", IMAGENET_STD)],
            ignore_index=ignore_index,
            category_ids=[int(i) for i in category_ids] if category_ids else None,
            things=[str(name) for name in things] if things else None,
        )
        splits = {"train": take("train_split", "train"), "val": take("val_split", "val")}
        splits["eval"] = take("split", splits["val"])
        loading = Loading(**{key: take(key) for key in LOADING_KEYS if key in values})
        encoding = LabelEncoding(
            ignore_index,
            take("label_map", None),
            take("reduce_zero_label", False),
            take("color_map", None),
            palette,
        )
        seed = take("seed", None)
        transforms = cls.pipelines(
            take("train_transforms", ()), take("val_transforms", ()), seed, original_masks
        )
        options = {key: take(key) for key in cls.options if key in values}
        unread = sorted(key for key in values if key not in cls.describing and key != "dataset")
        if unread:
            raise SegtrainError(
                f"data.{unread[0]} is not a key data={options.get('name', '?')} reads "
                f"({cls.__name__} reads {', '.join(sorted(cls.keys()))}); remove it"
            )
        return cls(
            values["dataset"],
            description,
            splits,
            loading,
            transforms,
            encoding,
            original_masks=original_masks,
            **options,
        )

    @classmethod
    def keys(cls) -> set[str]:
        return {*CONFIG_KEYS, *LOADING_KEYS, *cls.options, *cls.describing}

    @staticmethod
    def pipelines(train: Sequence, val: Sequence, seed: int | None, original_masks: bool) -> dict:
        return {"train": compose(train, seed), "val": compose(val, seed, track_extent=original_masks)}

    @property
    def classes(self) -> list[str]:
        return self.description.classes

    @property
    def palette(self) -> list[list[int]]:
        return self.description.palette

    @property
    def ignore_index(self) -> int:
        return self.description.ignore_index

    @property
    def in_channels(self) -> int:
        return self.description.in_channels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def reader(self, split: str, **options) -> SegmentationDataset:
        """The dataset reader of ``split``, its masks encoded as training encodes them; without ``options``
        (``transform``, ``weight_map``, ``original_mask``) it reads the pairs as published, unaugmented."""
        return self.dataset_factory(
            split=split,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            in_channels=self.in_channels,
            encoding=self.encoding,
            **options,
        )

    def build(self, stage: str) -> SegmentationDataset:
        if stage not in self.datasets:
            # Evaluation inputs reach the model windowed, flipped or rescaled: it computes their
            # superpixels itself.
            extra = {"superpixels": self.superpixels} if self.superpixels and stage == "train" else {}
            self.datasets[stage] = self.reader(
                self.splits[stage],
                transform=self.transforms["train" if stage == "train" else "val"],
                weight_map=self.weight_map if stage == "train" else None,
                original_mask=self.original_masks and stage != "train",
                **extra,
            )
            unpaired = getattr(self.datasets[stage], "unpaired", [])
            if unpaired:
                rank_zero_warn(
                    f"data={self.name} split '{self.splits[stage]}': {len(unpaired)} files have no image or "
                    "mask to pair with and are left out (e.g. "
                    f"{', '.join(str(path) for path in unpaired[:3])}); {len(self.datasets[stage])} pairs "
                    "remain. `segtrain check-data` lists them all."
                )
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.build("train")
            self.build("val")
        elif stage == "validate":
            self.build("val")
        elif stage == "test":
            self.build("eval")

    def loader(self, stage: str) -> DataLoader:
        training = stage == "train"
        dataset = self.build(stage)
        sampler = None
        if not training and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's DistributedSampler would pad the ranks to equal length by repeating images,
            # which the summed confusion matrix would then count twice.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.loading.batch_size
            if training
            else self.loading.val_batch_size or self.loading.batch_size,
            shuffle=training,
            sampler=sampler,
            drop_last=training,
            num_workers=self.loading.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.loading.persistent_workers and self.loading.num_workers > 0,
            collate_fn=self.collate(),
            worker_init_fn=seed_worker if self.loading.num_workers else None,
        )

    def collate(self):
        return partial(pad_collate, ignore_index=self.ignore_index)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.label_check_batches and self.trainer is not None and self.trainer.training:
            self.check_first_labels(batch["mask"], self.trainer.num_training_batches)
        return batch

    def check_first_labels(self, mask: torch.Tensor, batches_in_epoch: float = float("inf")) -> None:
        """Counts the labels of one batch; decides after ``label_check_batches`` batches, or after the
        first epoch's ``batches_in_epoch`` when ``trainer.limit_train_batches`` makes that fewer."""
        counts = torch.bincount(mask.flatten(), minlength=256)
        self.labels_seen = counts if self.labels_seen is None else self.labels_seen + counts
        self.label_check_batches = max(int(min(self.label_check_batches, batches_in_epoch)) - 1, 0)
        if self.label_check_batches == 0:
            present = self.labels_seen.nonzero().flatten().tolist()
            finding = diagnose_binary(present, self.num_classes, self.ignore_index, self.encoding.identity)
            if finding:
                raise SegtrainError(f"data={self.name}, the first training batches: {finding}")

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("eval")
