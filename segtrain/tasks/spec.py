"""The task contract: everything the commands (train, eval, predict, export, bench, check-data) ask of a
task without building its network.

A task is a package with a ``Task`` subclass (this file) and a LightningModule (``segtrain.tasks.module``),
and ``conf/task/<name>.yaml`` naming the subclass as ``task._target_``: the commands find the task through
the config, so adding one changes none of them. This module and each task's spec import no torch or
Lightning at module level, so that validating a config stays fast.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segtrain.data.io import output_names
from segtrain.errors import SegtrainError
from segtrain.schema import Key


class Task:
    """The command-side hooks of a task. The members that raise NotImplementedError are what each task
    defines (tests/test_tasks.py checks that the three tasks and a test-only fourth do)."""

    #: The ``task`` config's name, as checkpoints and exports record it.
    name = ""
    #: The models and data the task trains on, for messages that name the configs.
    trains_on = ""
    #: The tasks whose models and data configs this one trains besides its own (a task that reads semantic
    #: masks its own way takes the semantic models).
    compatible_tasks: tuple[str, ...] = ()
    #: Labels are 1..K: class 0 is the background that torchvision's detectors count, so ``data.classes``
    #: lists one class fewer than ``data.num_classes`` and ``data.ignore_index`` is not a class id.
    counts_background = False
    #: An export's ``logits`` output holds one channel per class of its metadata (predict checks that the
    #: two files belong together).
    logits_per_class = False
    #: Files ``predict`` writes once per run besides one set per image.
    prediction_summary_files: list[str] = []
    #: The task's own keys (its inference slice, ``conf/inference/<name>.yaml``), described as
    #: ``segtrain.schema`` describes the shared ones: validation checks them and ``--help`` lists them.
    keys: tuple[Key, ...] = ()

    @staticmethod
    def module_class() -> type:
        """The task's LightningModule class (a ``segtrain.tasks.module.TaskModule``), imported when asked
        for: torch and Lightning load only where a network is built."""
        raise NotImplementedError

    @classmethod
    def build_module(cls, cfg: DictConfig):
        """The task's LightningModule, with the model, optimizer and scheduler of ``cfg``."""
        return cls.module_class().from_config(cfg)

    @classmethod
    def build_datamodule(cls, cfg: DictConfig):
        """The data config's module, told at which resolution validation and evaluation score."""
        from segtrain.data.datamodule import build_datamodule

        return build_datamodule(cfg.data, score_resolution(cfg.get("inference") or {}))

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """The task's own rules, checked after ``segtrain.validation``'s generic ones."""
        if cfg.get("adversarial"):
            raise SegtrainError(
                f"adversarial training is for semantic segmentation; remove adversarial for task={cls.name}"
            )

    @classmethod
    def derive(cls, cfg: DictConfig) -> dict:
        """Settings derived from the data before training starts, as ``{dotted key: value}``: train and
        bench apply them over the config (``segtrain.tasks.with_derived``), and train logs them and writes
        them to derived.json. The base task derives none."""
        return {}

    @staticmethod
    def inference_settings(cfg: DictConfig) -> dict:
        """The inference settings eval records and export stores, with the resolution scores are taken at."""
        settings = OmegaConf.to_container(cfg.inference, resolve=True) if cfg.get("inference") else {}
        return {**settings, "score_resolution": score_resolution(settings)}

    @staticmethod
    def prediction_requests(cfg: DictConfig, inputs: list) -> list:
        """What ``predict`` runs the model on: the input images (the referring task pairs them with
        expressions)."""
        if cfg.get("text"):
            raise SegtrainError(
                f"text={cfg.text!r} is for referring checkpoints (task=referring); this model segments "
                "images without an expression. Drop text="
            )
        return inputs

    @staticmethod
    def prediction_names(requests: list) -> dict:
        """The output file name of each request: its image's stem, or whole name where stems collide."""
        return output_names(requests)

    @staticmethod
    def check_data(cfg: DictConfig):
        """check-data: the scan of ``data.split``, as a ``segtrain.data.checks.DataReport``."""
        raise NotImplementedError

    @staticmethod
    def score_table(result: dict, title: str) -> str:
        """The table of scores that train and eval print."""
        raise NotImplementedError

    @staticmethod
    def describe_scoring(cfg: DictConfig) -> str:
        """How the scores are taken (inference mode, resolution), for the table's title."""
        raise NotImplementedError

    @staticmethod
    def describe_predictions(cfg: DictConfig) -> str:
        """What ``eval save_predictions=true`` wrote."""
        raise NotImplementedError

    @staticmethod
    def count_scored(result: dict) -> str:
        """What the scores count (classes, categories, expressions)."""
        raise NotImplementedError

    @staticmethod
    def write_report(result: dict, directory: Path, title: str) -> Path:
        """eval's chart of ``result`` in ``directory``; returns its path."""
        raise NotImplementedError

    @staticmethod
    def prediction_files(name: str) -> list[str]:
        """The files ``predict`` writes for the input named ``name``."""
        raise NotImplementedError

    @staticmethod
    def predict_images(run, meta: dict, inference: dict, transforms, requests, names, out_dir: Path) -> str:
        """predict: runs ``run`` (a task's exported module, or an export) on each request and writes its
        files into ``out_dir``; returns the summary line."""
        raise NotImplementedError

    @staticmethod
    def bench_batch(batch: dict) -> dict:
        """bench: what its step reads of a training batch."""
        raise NotImplementedError


def score_resolution(inference) -> str:
    """``inference.score_resolution``: ``original`` unless set, also for checkpoints written before the key
    existed (they scored at the transformed size; evaluated now, they score as the official tools do)."""
    return inference.get("score_resolution", "original")


def pinned(batch: dict, keys: tuple[str, ...]) -> dict:
    """``keys`` of a training batch, pinned for asynchronous copies where there is a GPU (bench)."""
    import torch

    pin = torch.cuda.is_available()
    return {key: batch[key].pin_memory() if pin else batch[key] for key in keys}
