"""The tasks segtrain trains (the ``task`` config group): each module owns a LightningModule, its dataset
item contract, metrics, prediction writer and export wrapper. The commands dispatch on ``cfg.task.name``
through ``task_class`` and hold no task's logic themselves."""

from __future__ import annotations

import importlib
import logging

from omegaconf import DictConfig, OmegaConf

from segtrain.data.description import DEFAULT_TASK
from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

#: task name -> ("module:LightningModule class", what it trains on, for messages that name the configs)
TASKS = {
    "semantic": (
        "segtrain.tasks.semantic:SemanticSegmentation",
        "a semantic model (model=unet, deeplabv3plus, ...) and data (data=voc, camvid, ...)",
    ),
    "instance": (
        "segtrain.tasks.instance:InstanceSegmentation",
        "model=mask_rcnn, mask_rcnn_v2, panet or masklab and data=coco_instances or instances_folder",
    ),
    "referring": (
        "segtrain.tasks.referring:ReferringSegmentation",
        "model=text_objseg and data=shapes_referring or refcoco",
    ),
}


def task_name(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "task.name", default=DEFAULT_TASK))


def task_class(name: str):
    """The LightningModule class of task ``name`` (validated by ``segtrain.config.validate``)."""
    module, _, cls = TASKS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: DictConfig):
    """The task's LightningModule, with the model, optimizer and scheduler of ``cfg``."""
    return task_class(task_name(cfg)).from_config(cfg)


def build_datamodule(cfg: DictConfig):
    return task_class(task_name(cfg)).build_datamodule(cfg)


def load_task(cfg: DictConfig, data_root: bool = True):
    """A model from ``cfg.ckpt`` with its stored config, this command's overrides applied and validated
    (``data_root``: whether this command reads the dataset)."""
    from segtrain.config import check_accelerator, validate
    from segtrain.runtime.checkpoint import check_classes, check_task, load_checkpoint, stored_config
    from segtrain.runtime.trainer import set_threads

    checkpoint = load_checkpoint(cfg.ckpt)
    check_task(checkpoint, cfg, cfg.ckpt)
    merged = stored_config(checkpoint, cfg)
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


def without_pretrained(node) -> None:
    """Sets every ``pretrained`` flag under a model config to false and drops its weight files."""
    if not isinstance(node, DictConfig):
        return
    for key in list(node.keys()):
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            without_pretrained(child)
        elif key == "pretrained":
            node[key] = False
        elif key == "weights" and "pretrained" in node:
            node[key] = None
