"""``segtrain export``: ONNX (dynamic H, W and, where the task allows, batch) or TorchScript, checked
against PyTorch.

The task says what is exported (``ExportSpec``: a semantic model's logits, a detector's boxes, labels,
scores and masks). The export runs the exported model at two input sizes, compares every output with
the PyTorch model and fails when the maximum absolute difference exceeds ``export.atol``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from segtrain.commands.loading import command_overrides, load_task, metadata_path
from segtrain.commands.predict import session_runner
from segtrain.errors import SegtrainError
from segtrain.noise import exporting
from segtrain.run_directory import check_writable
from segtrain.runtime.checkpoint import save_failure, temporary_beside
from segtrain.runtime.trainer import output_dir
from segtrain.tasks import task_spec
from segtrain.tasks.module import ExportSpec


def export_onnx(
    model: torch.nn.Module,
    sample: torch.Tensor | tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    exporter: str = "torchscript",
    plan: ExportSpec | None = None,
) -> None:
    """ONNX with the dynamic axes of ``plan`` (by default a semantic model's batch, height and width), by
    ``exporter``: torch.export's (opset 18 and up), or the TorchScript-based one, deprecated since torch 2.9
    but able to trace the size-dependent Python branches that torch.export rejects (U-Net's crop, for one)
    and the detectors' data-dependent number of detections."""
    plan = plan or ExportSpec(model, [sample])
    inputs = sample if isinstance(sample, tuple) else (sample,)
    names = {"input_names": plan.input_names, "output_names": plan.output_names, "opset_version": opset}
    if exporter == "torch.export":
        dims = {}
        shapes = tuple(
            {
                axis: dims.setdefault(name, torch.export.Dim(name))
                for axis, name in plan.dynamic_axes[key].items()
            }
            for key in plan.input_names
        )
        torch.onnx.export(
            model,
            inputs,
            str(path),
            dynamo=True,
            dynamic_shapes=shapes,
            external_data=False,  # one file, renamed into place whole: no weights left in a side file
            verbose=False,
            **names,
        )
        return
    with exporting():
        torch.onnx.export(model, inputs, str(path), dynamic_axes=plan.dynamic_axes, dynamo=False, **names)


def embed_metadata(path: Path, meta: dict) -> None:
    """The metadata also travels inside the ONNX file (``metadata_props``), where ONNX tools show it."""
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def onnx_runner(path: Path) -> Callable:
    import onnxruntime as ort

    return session_runner(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


def check_output(path: Path) -> None:
    """Refuses a directory, a path under a file, or an unwritable place, before the model is exported."""
    if path.is_dir():
        raise SegtrainError(f"output={path} is a directory; pass a file path such as {path / 'model.onnx'}")
    check_writable(path.parent, key="output")
    if path.exists() and not os.access(path, os.W_OK):
        raise SegtrainError(f"output={path} exists and is read-only; pass another path")
    if path.exists() and not metadata_path(path).exists():
        raise SegtrainError(
            f"output={path} exists and was not written by segtrain export (no {metadata_path(path).name} "
            "beside it); export does not write over it. Pass another path, or remove the file first"
        )


def compare(
    exported, model: torch.nn.Module, samples: list, label: str, align: Callable | None = None
) -> float:
    """The largest difference between the exported model and PyTorch over ``samples`` and every output
    (infinite where an output's shape differs, e.g. another number of detections); ``align`` pairs the
    two sides' outputs first."""
    worst = 0.0
    for sample in samples:
        inputs = sample if isinstance(sample, tuple) else (sample,)
        ours, theirs = as_tuple(exported(*inputs)), as_tuple(model(*inputs))
        if align is not None:
            theirs, ours = align(theirs, ours)
        diff = 0.0
        for mine, reference in zip(ours, theirs):
            if mine.shape != reference.shape:
                diff = math.inf
            elif mine.numel():
                diff = max(diff, (mine.float() - reference.float()).abs().max().item())
        shapes = ", ".join(str(tuple(output.shape)) for output in theirs)
        print(f"{label} vs PyTorch at {tuple(inputs[0].shape)}: max abs diff {diff:.3e} (outputs {shapes})")
        worst = max(worst, diff)
    return worst


def as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def write_and_compare(plan: ExportSpec, path: Path, fmt: str, opset: int, atol: float) -> tuple[float, str]:
    """Exports ``plan.module`` to ``path``; returns the largest difference from PyTorch over the samples and
    the exporter that wrote the file (ONNX: the first of ``plan.onnx_exporters`` that works within
    ``atol``)."""
    model, samples = plan.module, plan.samples
    with torch.no_grad():
        if fmt != "onnx":
            if plan.torchscript == "script":
                try:
                    scripted = torch.jit.script(model)
                except Exception as err:
                    reason = str(err).strip().splitlines()[0][:160]
                    raise SegtrainError(
                        f"this model does not compile to TorchScript ({reason}); its model file's docstring "
                        "says why. Export format=onnx instead"
                    ) from None
                scripted.save(str(path))
            else:
                torch.jit.trace(model, samples[0], check_trace=False).save(str(path))
            scripted = torch.jit.load(str(path))
            return compare(scripted, model, samples, fmt, plan.align), f"torch.jit.{plan.torchscript}"
        exporters = (
            plan.onnx_exporters if opset >= 18 else [e for e in plan.onnx_exporters if e != "torch.export"]
        )
        for exporter in exporters[:-1]:
            try:
                export_onnx(model, samples[0], path, opset, exporter, plan)
                worst = compare(onnx_runner(path), model, samples, f"onnx ({exporter} exporter)", plan.align)
                if worst <= atol:
                    return worst, exporter
                reason = f"it differs from PyTorch by {worst:.3e}"
            except OSError:
                raise  # a full disk or a refused write is not the model's fault
            except Exception as err:
                if isinstance(err.__cause__, OSError):
                    raise err.__cause__ from None
                reason = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()[0][:160]
            print(f"the {exporter} ONNX exporter does not fit this model ({reason}); trying the next one")
        export_onnx(model, samples[0], path, opset, exporters[-1], plan)
        label = f"onnx ({exporters[-1]} exporter)"
        return compare(onnx_runner(path), model, samples, label, plan.align), exporters[-1]


def export(cfg: DictConfig) -> Path:
    fmt = cfg.format
    if fmt not in ("onnx", "torchscript"):
        raise SegtrainError(f"format={fmt} is not supported; use format=onnx or format=torchscript")
    path = (
        Path(cfg.output)
        if cfg.get("output")
        else output_dir(cfg) / ("model.onnx" if fmt == "onnx" else "model.pt")
    )
    check_output(path)
    task, merged = load_task(cfg, command_overrides(), data_root=False)
    # A model that cannot be exported says why (Graph LSTM: SLIC and a data-dependent update order).
    if getattr(task.model, "export_error", None):
        raise SegtrainError(task.model.export_error)
    plan = task.export_spec([tuple(size) for size in cfg.export.check_sizes])
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place once checked: a failed export keeps the old file.
    written = temporary_beside(path)
    try:
        worst, exporter = write_and_compare(plan, written, fmt, cfg.export.opset, cfg.export.atol)
        if worst > cfg.export.atol:
            raise SegtrainError(
                f"exported {fmt} model differs from PyTorch by {worst:.3e} > export.atol={cfg.export.atol}; "
                f"nothing was written to {path}. Report the model, or raise export.atol if the difference is "
                "expected."
            )
        meta = {
            **task.metadata(),
            "format": fmt,
            "exporter": exporter,
            "input": plan.input,
            "output": plan.output,
            # segtrain predict applies them to exported models too, as it does to checkpoints.
            "inference": task_spec(merged).inference_settings(merged),
            "val_transforms": OmegaConf.to_container(merged.data.val_transforms, resolve=True),
            "max_abs_diff": worst,
            "atol": cfg.export.atol,
        }
        if fmt == "onnx":
            embed_metadata(written, meta)
        os.replace(written, path)
        metadata_path(path).write_text(json.dumps(meta, indent=2))
    except OSError as err:
        raise SegtrainError(save_failure(path, err, "the export", "output")) from None
    finally:
        written.unlink(missing_ok=True)
    print(
        f"exported {path} (max abs diff {worst:.3e} <= atol {cfg.export.atol}); metadata in "
        f"{metadata_path(path)}"
    )
    return path
