"""Writing checkpoints atomically, loading them, and re-applying command-line overrides to their
stored config."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError

#: Keys of eval / predict / export themselves, never applied to a checkpoint's training config.
COMMAND_KEYS = {"ckpt", "input", "output", "format", "export", "task_name", "hydra"}
#: The machine and where outputs go: always this command's, never the checkpoint's.
RUNTIME_KEYS = ("trainer", "paths", "logger", "callbacks")


_ABSENT = object()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A process killed mid-write (``kill -9``, a node failure, a full disk) leaves the previous file
    whole, never a torn one that ``resume=true`` or a requeued job would then fail to load.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: rename is not atomic there, leave it to fsspec
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def read_metadata(path: str | Path) -> dict:
    """The ``segtrain`` entry of a checkpoint, without reading its tensors into memory."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("segtrain", {})


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"ckpt={path} does not exist; pass the path of a segtrain .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SegtrainError(f"ckpt={path} cannot be read as a checkpoint ({err}); is the file complete?") from err
    if "segtrain" not in checkpoint:
        raise SegtrainError(f"ckpt={path} was not written by segtrain: it carries no 'segtrain' metadata")
    return checkpoint


def stored_config(checkpoint: dict, cfg: DictConfig) -> DictConfig:
    """The checkpoint's training config, with this command's runtime nodes and overrides.

    ``trainer``, ``paths``, ``logger`` and ``callbacks`` come from this command. Every override on
    the command line (``data.root=...``, ``inference.mode=slide``, or a group such as ``data=voc``)
    replaces the stored value with the one Hydra composed for this command.
    """
    stored = OmegaConf.create(checkpoint["segtrain"]["config"])
    for key in RUNTIME_KEYS:
        if key in cfg:
            stored[key] = cfg[key]
    for override in OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task)):
        key = override.key_or_group
        top = key.split(".")[0]
        if top in COMMAND_KEYS or top in RUNTIME_KEYS:
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(stored, parent) if parent else stored
            if isinstance(node, DictConfig) and leaf in node:
                node.pop(leaf)
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue  # a global overlay (experiment=, debug=): its keys are runtime keys or absent
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return stored


def check_classes(checkpoint: dict, cfg: DictConfig, ckpt_path) -> None:
    trained = list(checkpoint["segtrain"]["classes"])
    wanted = list(cfg.data.classes)
    if trained != wanted:
        raise SegtrainError(
            f"ckpt={ckpt_path} was trained on {len(trained)} classes {trained}, but data={cfg.data.get('name', '?')} "
            f"declares {len(wanted)} classes {wanted}. Use the data config the model was trained with, "
            "or fine-tune a model on this dataset first."
        )
