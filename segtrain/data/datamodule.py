"""The LightningDataModule every data config instantiates."""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from segtrain.data.checks import diagnose_binary
from segtrain.data.datasets.base import SegmentationDataset, pad_collate
from segtrain.data.encoding import LabelEncoding
from segtrain.data.transforms import compose, seed_worker
from segtrain.errors import SegtrainError


class SegDataModule(pl.LightningDataModule):
    """Train / val / eval loaders over one dataset reader.

    ``dataset`` is a partial of a reader class taking ``split``, ``num_classes``, ``ignore_index``,
    ``in_channels``, ``transform`` and ``encoding``. ``label_map``, ``reduce_zero_label`` and
    ``color_map`` say how the published masks encode class ids (see ``LabelEncoding``). The rest of
    the data config (classes, palette, mean, std, the training ``crop_size`` that sliding-window
    inference defaults to) describes the dataset to the task, checkpoints and exports.

    ``seed``: seeds the augmentation pipelines (``segtrain.data.transforms``); the data configs pass
    ``${seed}``.

    ``weight_map``: the U-Net paper's per-pixel loss weights (``unet_weight_map`` arguments),
    computed for training samples in the workers; ``loss=unet_weight_map`` sets it.

    ``superpixels``: SLIC settings (``n_segments``, ``compactness``) of the graph models' nodes, computed for
    training samples in the workers (batches carry them as ``superpixels``, -1 in padding);
    ``model=graph_lstm`` sets it.

    ``score_resolution`` (``inference.score_resolution``, which the semantic task passes): ``original`` keeps
    validation and evaluation masks as annotated, so predictions are scored at each image's own size
    whatever ``val_transforms`` do; ``transformed`` transforms them with the image.

    The first ``label_check_batches`` training batches are checked for the {0, 255} binary-mask
    slip that per-image checks cannot see, since one image may rightly hold background only.
    """

    task = "semantic"

    def __init__(
        self,
        dataset: Callable[..., SegmentationDataset],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        num_classes: int,
        name: str = "",
        root: str | None = None,
        ignore_index: int = 255,
        in_channels: int = 3,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        train_split: str = "train",
        val_split: str = "val",
        split: str = "val",
        crop_size: Sequence[int] | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        train_transforms: Sequence = (),
        val_transforms: Sequence = (),
        label_map: dict[int, int] | str | None = None,
        reduce_zero_label: bool = False,
        color_map: dict | Sequence | str | None = None,
        label_check_batches: int = 20,
        weight_map: dict | None = None,
        superpixels: dict | None = None,
        seed: int | None = None,
        score_resolution: str = "original",
    ):
        super().__init__()
        self.dataset_factory = dataset
        self.classes = list(classes)
        self.palette = [list(color) for color in palette]
        self.num_classes = num_classes
        self.name = name
        self.ignore_index = ignore_index
        self.in_channels = in_channels
        self.mean, self.std = list(mean), list(std)
        self.splits = {"train": train_split, "val": val_split, "eval": split}
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers and num_workers > 0
        self.original_masks = score_resolution == "original"
        self.transforms = {
            "train": compose(train_transforms, seed),
            "val": compose(val_transforms, seed, track_extent=self.original_masks),
        }
        self.encoding = LabelEncoding(ignore_index, label_map, reduce_zero_label, color_map, self.palette)
        self.label_check_batches = label_check_batches
        self.weight_map = dict(weight_map) if weight_map else None
        self.superpixels = dict(superpixels) if superpixels else None
        self.labels_seen: torch.Tensor | None = None
        self.datasets: dict[str, SegmentationDataset] = {}

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
            batch_size=self.batch_size if training else self.val_batch_size,
            shuffle=training,
            sampler=sampler,
            drop_last=training,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.collate(),
            worker_init_fn=seed_worker if self.num_workers else None,
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
