"""One description of a dataset (task, classes, palette, normalisation, ignore label), shared by the task,
the checkpoint and the export metadata, instead of each copying ``cfg.data.*`` keys by hand."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from omegaconf import DictConfig, OmegaConf

#: The task of a checkpoint written before checkpoints named their task.
DEFAULT_TASK = "semantic"


@dataclass(frozen=True)
class DatasetDescription:
    """``classes``: the names the model predicts. Semantic: one per class id, background included.
    Instance: the object categories in contiguous label order 1..K; label 0 is the background that
    torchvision's detectors count, so ``num_classes`` is K + 1 there."""

    task: str
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    ignore_index: int = 255
    #: Instance datasets: the json category id of each class, in label order 1..K (COCO's ids have gaps).
    category_ids: list[int] | None = None
    #: Panoptic datasets: the classes that have instances (the rest is stuff).
    things: list[str] | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> DatasetDescription:
        data = cfg.data
        return cls(
            task=str(OmegaConf.select(cfg, "task.name", default=DEFAULT_TASK)),
            classes=[str(name) for name in data.classes],
            palette=[list(color) for color in OmegaConf.to_container(data.palette, resolve=True)],
            mean=[float(value) for value in data.mean],
            std=[float(value) for value in data.std],
            ignore_index=int(data.get("ignore_index", 255)),
            category_ids=[int(i) for i in data.category_ids] if data.get("category_ids") else None,
            things=[str(name) for name in data.things] if data.get("things") else None,
        )

    @classmethod
    def from_metadata(cls, meta: dict) -> DatasetDescription:
        """From a checkpoint's or an export's metadata, including those written before the task was named."""
        return cls(
            task=meta.get("task", DEFAULT_TASK),
            classes=list(meta["classes"]),
            palette=[list(color) for color in meta["palette"]],
            mean=list(meta["mean"]),
            std=list(meta["std"]),
            ignore_index=meta.get("ignore_index", 255),
            category_ids=meta.get("category_ids"),
            things=meta.get("things"),
        )

    @property
    def in_channels(self) -> int:
        return len(self.mean)

    def normalize(self, image):
        """A uint8 ``[B, C, H, W]`` batch as the model takes it: ``(x / 255 - mean) / std`` per channel
        (where there is no LightningModule to do it on the device: predict from a checkpoint or an export)."""
        import torch

        mean = torch.tensor(self.mean).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std).view(1, -1, 1, 1) * 255
        return (image.float() - mean) / std

    def metadata(self) -> dict:
        return asdict(self)
