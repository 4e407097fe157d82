"""A trained task from ``ckpt=``, for the commands that read checkpoints and exports (eval, predict,
export)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from segtrain.compat import config_node
from segtrain.data.description import DEFAULT_TASK
from segtrain.errors import SegtrainError
from segtrain.runtime.checkpoint import (
    check_classes,
    check_task,
    load_checkpoint,
    read_metadata,
    stored_config,
)
from segtrain.runtime.trainer import set_threads
from segtrain.tasks import build_task, task_name
from segtrain.validation import check_accelerator, validate

log = logging.getLogger(__name__)


def command_overrides() -> list[str]:
    """The overrides typed on this command's line, as Hydra recorded them for the job."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def load_task(cfg: DictConfig, overrides: list[str], data_root: bool = True):
    """A model from ``cfg.ckpt`` with its stored config, this command's ``overrides`` applied and
    validated (``data_root``: whether this command reads the dataset)."""
    checkpoint = load_checkpoint(cfg.ckpt)
    check_task(checkpoint["segtrain"].get("task", DEFAULT_TASK), task_name(cfg), cfg.ckpt)
    merged = stored_config(checkpoint, cfg, overrides)
    check_classes(checkpoint, merged, cfg.ckpt)
    validate(merged, data_root=data_root)
    check_accelerator(merged)
    set_threads(merged)
    # The checkpoint's weights replace the backbone's initial ones: none are fetched, and the backbone's
    # "initialised from random initialisation" line would read as if the trained weights were not loaded.
    without_pretrained(merged.model)
    backbone_log = logging.getLogger("segtrain.models.backbones")
    level = backbone_log.level
    backbone_log.setLevel(logging.WARNING)
    try:
        task = build_task(merged)
    finally:
        backbone_log.setLevel(level)
    log.info("model weights from ckpt=%s", cfg.ckpt)
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        trained = (
            checkpoint["segtrain"].get("resolved_config", checkpoint["segtrain"]["config"]).get("model", {})
        )
        raise SegtrainError(
            f"the weights in ckpt={cfg.ckpt} do not fit model={merged.model.get('_target_')} as configured "
            f"(trained as {trained.get('_target_')}): {str(err).splitlines()[-1].strip()[:300]}. Drop the "
            "model overrides; eval, predict and export use the model the checkpoint was trained with."
        ) from None
    return task.eval(), merged


def metadata_path(model_path: Path) -> Path:
    """``model.onnx.json`` beside ``model.onnx``, ``model.pt.json`` beside ``model.pt``: one metadata file
    per exported file, so exporting one never replaces the other's classes and normalisation."""
    return model_path.with_name(model_path.name + ".json")


#: Files ``segtrain export`` writes, which predict runs without a checkpoint.
EXPORTED_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript"}


def trained_task(path: Path) -> str:
    """The task a checkpoint (its metadata) or an export (its metadata file, or the copy inside an ONNX
    file) was trained for; semantic for those written before tasks were named."""
    if path.suffix not in EXPORTED_SUFFIXES:
        return read_metadata(path).get("task", DEFAULT_TASK)
    meta_path = metadata_path(path)
    try:
        if meta_path.is_file():
            return json.loads(meta_path.read_text()).get("task", DEFAULT_TASK)
        if path.suffix == ".onnx":
            import onnx

            properties = onnx.load(str(path), load_external_data=False).metadata_props
            return json.loads({p.key: p.value for p in properties}.get("task", json.dumps(DEFAULT_TASK)))
    except Exception:  # predict's own reading of the export says what is wrong with it
        pass
    return DEFAULT_TASK


def without_pretrained(node) -> None:
    """Sets every ``pretrained`` flag under a model config to false and drops its weight files."""
    if not isinstance(node, DictConfig):
        return
    for key in list(node.keys()):
        child = config_node(node, key)
        if isinstance(child, DictConfig):
            without_pretrained(child)
        elif key == "pretrained":
            node[key] = False
        elif key == "weights" and "pretrained" in node:
            node[key] = None
