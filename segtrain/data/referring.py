"""Referring segmentation data: an image, an expression, and the mask of the one object it refers to.

Items: ``{"image": uint8 CxHxW, "tokens": int64 [T], "mask": uint8 HxW (1: the referred object, 0: the
rest, 255: ignore), "meta": {"expression": str, "name", "size", "region", ...}}``. Evaluation items keep the
mask as annotated, as semantic ones do, so predictions are scored at each image's own size.

Expressions are lower-cased and split into words; a word the vocabulary does not hold becomes ``<unk>``.
Token ids are left-padded with ``<pad>`` (0) to ``max_length`` and cut after it, so that the last step of
the language model has read the last word whatever the length (Hu et al. 2016 do the same).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Sequence

import albumentations as A
import torch
from omegaconf import DictConfig

from segtrain.data.checks import DataReport, Finding
from segtrain.data.datamodule import SegDataModule, build_datamodule
from segtrain.data.datasets.base import SegmentationDataset, pad_collate
from segtrain.errors import SegtrainError

PAD, UNK = "<pad>", "<unk>"


def tokenize(expression: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", expression.lower())


def build_vocabulary(expressions: Iterable[str], min_count: int = 1) -> list[str]:
    """``<pad>``, ``<unk>``, then the words seen at least ``min_count`` times, most frequent first (ties
    alphabetically, so that the same expressions always give the same ids)."""
    counts = Counter(word for expression in expressions for word in tokenize(expression))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *words]


def encode(expression: str, ids: dict[str, int], max_length: int) -> torch.Tensor:
    """int64 [max_length]: the first ``max_length`` words' ids, left-padded with 0."""
    words = tokenize(expression)[:max_length]
    tokens = [ids.get(word, ids[UNK]) for word in words]
    return torch.tensor([0] * (max_length - len(tokens)) + tokens, dtype=torch.int64)


def unread_words(expression: str, ids: dict[str, int], max_length: int) -> dict[str, list[str]]:
    """The words of ``expression`` the model does not read: those outside its vocabulary (read as
    ``<unk>``) and those past ``max_length`` (cut)."""
    words = tokenize(expression)
    return {
        "unknown_words": [word for word in words[:max_length] if word not in ids],
        "cut_words": words[max_length:],
    }


def word_ids(vocabulary: Sequence[str]) -> dict[str, int]:
    if len(vocabulary) < 2 or list(vocabulary[:2]) != [PAD, UNK]:
        raise SegtrainError(
            f"data.vocabulary must start with {PAD!r} and {UNK!r} (it starts {list(vocabulary[:2])}); leave "
            "it null and training builds it from the train split's expressions"
        )
    return {word: index for index, word in enumerate(vocabulary)}


class ReferringDataset(SegmentationDataset):
    """Base of the referring readers: ``read_raw`` gives the image, the referred object's 0/1 mask and
    meta with its ``expression``; ``expressions()`` lists them without reading images (for the vocabulary).
    Without a ``vocabulary`` items carry no tokens."""

    def __init__(self, split: str, vocabulary: Sequence[str] | None = None, max_length: int = 20, **kwargs):
        super().__init__(split, num_classes=2, **kwargs)
        self.ids = word_ids(vocabulary) if vocabulary is not None else None
        self.max_length = max_length

    def expressions(self) -> list[str]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if self.ids is not None:
            item["tokens"] = encode(item["meta"]["expression"], self.ids, self.max_length)
        return item


def referring_collate(batch: Sequence[dict], ignore_index: int = 255) -> dict:
    collated = pad_collate(batch, ignore_index)
    collated["tokens"] = torch.stack([item["tokens"] for item in batch])
    return collated


#: Augmentations that swap sides or turn the image: an expression's "left" or "above" would then point at
#: another object than its mask.
GEOMETRY_FLIPS = (A.HorizontalFlip, A.VerticalFlip, A.RandomRotate90, A.Transpose, A.D4)


class ReferringDataModule(SegDataModule):
    """Train / val / eval loaders of a referring reader (``dataset``: a partial taking ``split``,
    ``vocabulary``, ``max_length``, ``ignore_index``, ``in_channels``, ``transform``, ``original_mask``).

    ``vocabulary``: the words the model reads, ``<pad>`` and ``<unk>`` first; null until training builds it
    from the train split's words seen ``min_word_count`` times or more
    (``ReferringTask.derive``), after which checkpoints carry it. ``max_length``: words
    read per expression (the paper's 20).
    """

    task = "referring"
    options = ("name", "weight_map", "superpixels", "vocabulary", "max_length")
    #: Read where the vocabulary is built (ReferringTask.derive).
    describing = (*SegDataModule.describing, "min_word_count")

    def __init__(self, *parts, vocabulary: Sequence[str] | None = None, max_length: int = 20, **options):
        super().__init__(*parts, label_check_batches=0, **options)
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        self.max_length = max_length
        pipeline = self.transforms["train"]
        listed = pipeline.transforms if pipeline is not None else []
        flips = [type(t).__name__ for t in listed if isinstance(t, GEOMETRY_FLIPS)]
        if flips:
            raise SegtrainError(
                f"data.train_transforms hold {', '.join(flips)}: expressions name sides ('the disc left of "
                "the square'), so a flipped or turned image no longer matches its expression. Remove them "
                "from data.train_transforms"
            )

    def reader(self, split: str, **options) -> ReferringDataset:
        if options.pop("weight_map", None) is not None:
            raise SegtrainError(
                "data.weight_map (U-Net's per-pixel loss weights) is for semantic data; task=referring "
                "weighs pixels by loss.negative_weight. Set data.weight_map=null"
            )
        return self.dataset_factory(
            split=split,
            vocabulary=options.pop("vocabulary", self.vocabulary),
            max_length=self.max_length,
            ignore_index=self.ignore_index,
            in_channels=self.in_channels,
            **options,
        )

    def build(self, stage: str) -> ReferringDataset:
        if self.vocabulary is None:
            raise SegtrainError(
                "data.vocabulary is null: `segtrain train` builds it from the train split's expressions and "
                "stores it in the checkpoint. Train first, or pass the checkpoint (ckpt=...)"
            )
        return super().build(stage)

    def collate(self):
        return partial(referring_collate, ignore_index=self.ignore_index)


@dataclass
class ReferringReport:
    """What ``check-data`` found in a referring split."""

    expressions: int = 0
    longest: int = 0
    cut: int = 0
    object_pixels: float = 0.0


def scan_expressions(cfg: DictConfig) -> DataReport:
    """check-data's scan of a referring split: expressions, words past ``data.max_length``, empty masks."""
    datamodule = build_datamodule(cfg.data)
    dataset = datamodule.reader(cfg.data.split, vocabulary=None)
    report = ReferringReport(expressions=len(dataset))
    errors = []
    for index in range(len(dataset)):
        _, mask, meta = dataset.load(index)
        words = len(tokenize(meta["expression"]))
        report.longest = max(report.longest, words)
        report.cut += words > datamodule.max_length
        report.object_pixels += float((mask == 1).mean())
        if not (mask == 1).any():
            errors.append(
                Finding(
                    f"{meta['name']}: the mask of '{meta['expression']}' is empty.",
                    "fix the annotation, or remove the expression from the split",
                )
            )
    header = (
        f"data={cfg.data.get('name', '?')} split={cfg.data.split}: {report.expressions} expressions, "
        f"the longest {report.longest} words ({report.cut} cut at data.max_length={datamodule.max_length}); "
        f"the referred object covers {100 * report.object_pixels / max(report.expressions, 1):.1f}% of an "
        "image on average"
    )
    return DataReport(header, errors=errors, scan=report)
