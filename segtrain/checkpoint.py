"""Loading segtrain checkpoints and re-applying command-line overrides to their stored config."""
from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError

#: Keys of eval / predict / export themselves, never applied to a checkpoint's training config.
COMMAND_KEYS = {"ckpt", "input", "output", "format", "export", "task_name", "hydra"}
#: The machine and where outputs go: always this command's, never the checkpoint's.
RUNTIME_KEYS = ("trainer", "paths", "logger", "callbacks")


_ABSENT = object()


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
