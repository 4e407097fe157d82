"""The tasks segtrain trains (the ``task`` config group): each module owns a LightningModule, its dataset
item contract, metrics, prediction writer and export wrapper. The commands dispatch on ``cfg.task.name``
through ``task_class`` and hold no task's logic themselves."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from segtrain.data.description import DEFAULT_TASK

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
    """The LightningModule class of task ``name`` (validated by ``segtrain.validation.validate``)."""
    module, _, cls = TASKS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: DictConfig):
    """The task's LightningModule, with the model, optimizer and scheduler of ``cfg``."""
    return task_class(task_name(cfg)).from_config(cfg)


def build_datamodule(cfg: DictConfig):
    return task_class(task_name(cfg)).build_datamodule(cfg)
