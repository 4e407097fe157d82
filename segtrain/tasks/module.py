"""What every task's LightningModule shares: normalisation on the device, optimisation, the first
non-finite loss, launch time, ``runtime.channels_last`` / ``runtime.compile``, and checkpoint metadata.

A task's module owns its steps, losses, metrics, prediction writer and export wrapper; the hooks the
commands call without a network are its spec's (``segtrain.tasks.spec``). Which score ranks its runs is
the task config's ``task.monitor``.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from segtrain import LAUNCHED_AT, __version__
from segtrain.data.description import DatasetDescription
from segtrain.errors import SegtrainError
from segtrain.runtime.checkpoint import composed_config


@dataclass
class ExportSpec:
    """What ``segtrain export`` writes for a task: ``module`` run on ``samples`` (one per check size; a tuple
    where the graph takes several inputs, in ``input_names``' order), the graph's names and dynamic axes,
    the ONNX exporters worth trying in order, and how TorchScript is made (``trace`` or ``script``).
    ``input``/``output`` describe the graph in the metadata."""

    module: nn.Module
    samples: list[torch.Tensor | tuple[torch.Tensor, ...]]
    input_names: list[str] = field(default_factory=lambda: ["image"])
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    dynamic_axes: dict[str, dict[int, str]] = field(
        default_factory=lambda: {
            "image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        }
    )
    onnx_exporters: tuple[str, ...] = ("torch.export", "torchscript")
    torchscript: str = "trace"
    input: str = ""
    output: str = ""
    #: (PyTorch's outputs, the export's) -> the two paired, for outputs whose order or cut is not defined
    #: (detections of equal score).
    align: Callable | None = None


class TaskModule(pl.LightningModule):
    """``model`` is a plain nn.Module; images arrive as uint8 and are normalised here, on the device."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None,
        description: DatasetDescription,
        inference: dict | None = None,
        config: dict | None = None,
        resolved_config: dict | None = None,
        lr_base_batch_size: int | None = None,
        channels_last: bool = False,
        compile: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.description = description
        self.classes = list(description.classes)
        self.palette = [list(color) for color in description.palette]
        self.ignore_index = description.ignore_index
        self.inference = dict(inference or {})
        #: The config as composed (interpolations kept, see ``segtrain.runtime.checkpoint.composed_config``)
        #: and as resolved for this run; checkpoints store both.
        self.config = config or {}
        self.resolved_config = resolved_config or self.config
        self.lr_base_batch_size = lr_base_batch_size
        self.channels_last = channels_last
        volumetric = any(isinstance(module, nn.Conv3d) for module in model.modules())
        #: The layout of the model's weights and inputs (``runtime.channels_last``).
        self.memory_format = (
            (torch.channels_last_3d if volumetric else torch.channels_last)
            if channels_last
            else torch.contiguous_format
        )
        compile_options = dict(compile or {})
        self.compile_enabled = bool(compile_options.pop("enable", False))
        #: ``torch.compile`` arguments of ``runtime.compile`` (mode, dynamic, ...).
        self.compile_kwargs = compile_options
        #: ``torch.compile(self.model)`` once set up; kept off the module tree so that state dicts,
        #: checkpoints and exports hold the plain model's keys (no ``_orig_mod.``).
        self.__dict__["run_model"] = self.model
        channels = description.in_channels
        mean, std = torch.tensor(description.mean), torch.tensor(description.std)
        self.register_buffer("pixel_mean", mean.view(1, channels, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", std.view(1, channels, 1, 1) * 255, persistent=False)
        # The first non-finite training loss, kept on the device (watch_nonfinite).
        self.register_buffer("nonfinite_step", torch.tensor(-1), persistent=False)
        self.register_buffer("nonfinite_loss", torch.tensor(0.0), persistent=False)
        self.register_buffer("nonfinite_unlabelled", torch.tensor(False), persistent=False)
        #: Seconds from importing segtrain to the first training batch (imports, data, model, loaders).
        self.launch_to_first_step_s: float | None = None
        self.val_scores: dict | None = None
        self.test_scores: dict | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig, **task_arguments) -> TaskModule:
        scheduler = cfg.get("scheduler")
        return cls(
            model=instantiate(cfg.model),
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(scheduler) if scheduler else None,
            description=DatasetDescription.from_config(cfg),
            inference=OmegaConf.to_container(cfg.inference, resolve=True) if cfg.get("inference") else {},
            config=composed_config(cfg),
            resolved_config=OmegaConf.to_container(cfg, resolve=True),
            lr_base_batch_size=OmegaConf.select(cfg, "auto_scale_lr.base_batch_size")
            if OmegaConf.select(cfg, "auto_scale_lr.enable")
            else None,
            channels_last=bool(OmegaConf.select(cfg, "runtime.channels_last")),
            compile=OmegaConf.to_container(cfg.runtime.compile)
            if OmegaConf.select(cfg, "runtime.compile")
            else None,
            **task_arguments,
        )

    def setup(self, stage: str) -> None:
        """``runtime.channels_last`` and ``runtime.compile`` (benchmarks/gpu.md says where they pay)."""
        if self.channels_last:
            self.model.to(memory_format=self.memory_format)
        if self.compile_enabled and self.run_model is self.model:
            self.__dict__["run_model"] = torch.compile(self.model, **self.compile_kwargs)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype == torch.uint8:  # volumes arrive as float: their reader normalises per modality
            image = (image.float() - self.pixel_mean) / self.pixel_std
        return image.contiguous(memory_format=self.memory_format) if self.channels_last else image

    def watch_nonfinite(self, loss: torch.Tensor, unlabelled: torch.Tensor) -> None:
        """Records the first non-finite loss on the device (``unlabelled``: whether the batch held no labels
        at all): checking it here would stall the GPU every step (``raise_if_nonfinite`` reads it back on
        the logging interval, and before anything is saved)."""
        first = self.nonfinite_step < 0
        bad = ~torch.isfinite(loss.detach()) & first
        self.nonfinite_step = torch.where(
            bad, torch.full_like(self.nonfinite_step, self.global_step), self.nonfinite_step
        )
        self.nonfinite_loss = torch.where(bad, loss.detach().float(), self.nonfinite_loss)
        self.nonfinite_unlabelled = torch.where(bad, unlabelled, self.nonfinite_unlabelled)

    #: Why a batch without labels has no loss, and what to check (the task's data keys).
    unlabelled_batch_hint = "there are no labels, so the loss is undefined: check the data"

    def raise_if_nonfinite(self) -> None:
        step = int(self.nonfinite_step)
        if step < 0:
            return
        if bool(self.nonfinite_unlabelled):
            raise SegtrainError(f"in the training batch at global step {step}, {self.unlabelled_batch_hint}")
        raise SegtrainError(
            f"loss is {float(self.nonfinite_loss)} at global step {step} (epoch {self.current_epoch}); "
            "training stopped and the last saved checkpoint is kept. Lower optimizer.lr, set "
            "trainer.gradient_clip_val, or check the data."
        )

    def on_train_epoch_start(self) -> None:
        # A model trained in stages (DPN's incremental schedule) picks its stage from the epoch.
        begin_epoch = getattr(self.model, "begin_epoch", None)
        if begin_epoch is not None:
            begin_epoch(self.current_epoch, self.trainer.max_epochs)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.launch_to_first_step_s is None:
            self.launch_to_first_step_s = time.monotonic() - LAUNCHED_AT
            compiled = (
                " (torch.compile traces on this step: its time is not included)"
                if self.compile_enabled
                else ""
            )
            rank_zero_info(f"launch to first training step: {self.launch_to_first_step_s:.1f} s{compiled}")

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        # Checkpoints are written at epoch ends and after validation: both come after a check.
        if (
            batch_idx + 1
        ) % self.trainer.log_every_n_steps == 0 or batch_idx + 1 >= self.trainer.num_training_batches:
            self.raise_if_nonfinite()

    def on_validation_start(self) -> None:
        if self.trainer.training:
            self.raise_if_nonfinite()

    def configure_optimizers(self):
        optimizer, scheduler = self.model_optimization()
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    def model_optimization(self) -> tuple[torch.optim.Optimizer, dict | None]:
        """The model's optimizer (lr scaled, ``scale_lr``) and its per-step scheduler, if any."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params, **fused_on_gpu(self.optimizer_factory, params))
        self.scale_lr(optimizer)
        if self.scheduler_factory is None:
            return optimizer, None
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return optimizer, {"scheduler": scheduler, "interval": "step"}

    def scale_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Reports the effective batch size and, with ``lr_base_batch_size`` set, scales the lr linearly
        to it (Goyal et al., 2017, "Accurate, Large Minibatch SGD")."""
        loading = getattr(self.trainer.datamodule, "loading", None)
        if loading is None:  # a data module segtrain did not build says nothing of its batches
            return
        per_device = loading.batch_size
        processes, accumulated = self.trainer.world_size, self.trainer.accumulate_grad_batches
        effective = per_device * processes * accumulated
        message = (
            f"effective batch size {effective} = {per_device} per process x {processes} processes "
            f"x {accumulated} accumulated"
        )
        if self.lr_base_batch_size:
            factor = effective / self.lr_base_batch_size
            for group in optimizer.param_groups:
                group["lr"] *= factor
            message += (
                f"; lr scaled by {effective}/{self.lr_base_batch_size} = {factor:g} "
                f"to {optimizer.param_groups[0]['lr']:g}"
            )
        rank_zero_info(message)

    def validation_step(self, batch: dict, batch_idx: int):
        return self.evaluate_batch(batch, "val")

    def test_step(self, batch: dict, batch_idx: int):
        return self.evaluate_batch(batch, "test")

    def on_validation_epoch_end(self) -> None:
        # The sanity check's few batches are no validation: scoring them would report their numbers as
        # the run's if no real validation followed.
        if self.trainer.sanity_checking:
            self.reset_scores("val")
            return
        self.val_scores = self.epoch_scores("val")

    def on_test_epoch_end(self) -> None:
        self.test_scores = self.epoch_scores("test")

    def gather(self, value) -> list:
        """``value`` of every rank (of this one alone outside distributed runs), in rank order."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return [value]
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    # The module's part of the task contract: what the commands (eval, predict, export, bench) and the
    # callbacks call on a trained network, which every task defines (tests/test_tasks.py checks both sides).

    #: The scores printed and plotted after each validation.
    epoch_metrics: tuple[str, ...] = ()

    def evaluate_batch(self, batch: dict, stage: str):
        """Predicts ``batch`` and adds it to the ``stage``'s (val, test) scores; returns the predictions."""
        raise NotImplementedError

    def epoch_scores(self, stage: str) -> dict:
        """The ``stage``'s scores over every rank, logged as ``{stage}/NAME``; starts the next count."""
        raise NotImplementedError

    def reset_scores(self, stage: str) -> None:
        """Forgets what ``stage`` has counted so far."""
        raise NotImplementedError

    def prediction_writer(self, directory: Path, dataset) -> pl.Callback:
        """The callback that writes eval's predictions in the published format."""
        raise NotImplementedError

    def exported_module(self) -> nn.Module:
        """The module predict runs from a checkpoint, the same that export writes."""
        raise NotImplementedError

    def export_spec(self, sizes: list[tuple[int, ...]]) -> ExportSpec:
        """What export writes and checks, at each of ``sizes``."""
        raise NotImplementedError

    def overlay_panels(self, batch: dict, outputs, count: int, alpha: float) -> list:
        """Up to ``count`` image panels of ``batch`` with the model's ``outputs`` drawn over them."""
        raise NotImplementedError

    def reference_loss(self, model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
        """bench: the loss of one step as a hand-written loop computes it."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """What eval, predict and export need besides the weights."""
        return {
            **self.description.metadata(),
            # Where the backbone's weights came from before training (ImageNet, a file, or none).
            "backbone_weights": [
                m.weights_source for m in self.model.modules() if hasattr(m, "weights_source")
            ],
            "segtrain_version": __version__,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A resumed run's wandb logger reattaches to this id (runtime.resume.resolve_resume).
        wandb_id = next((logger.version for logger in self.loggers if isinstance(logger, WandbLogger)), None)
        checkpoint["segtrain"] = {
            **self.metadata(),
            "config": self.config,
            "resolved_config": self.resolved_config,
            "wandb_id": wandb_id,
            # resume=true passes over debug runs' checkpoints (runtime.resume.find_resume_checkpoint).
            "debug_run": bool(self.resolved_config.get("debug_run")),
        }
        # The metrics logged so far go to disk with the checkpoint, so a run resumed from it keeps them.
        for logger in self.loggers:
            logger.save()


def fused_on_gpu(factory: Callable, params: list[torch.Tensor]) -> dict:
    """``fused=True`` for an optimizer that has a fused CUDA kernel (SGD, Adam, AdamW), when every parameter
    is on the GPU and the config does not say otherwise: one kernel per step, not one per tensor group."""
    keywords = getattr(factory, "keywords", {})
    function = getattr(factory, "func", factory)
    try:
        takes_fused = "fused" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    on_gpu = bool(params) and all(p.is_cuda for p in params)
    return {"fused": True} if takes_fused and on_gpu and keywords.get("fused") is None else {}
