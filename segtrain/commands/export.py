"""``segtrain export``: ONNX (dynamic batch, H, W) or TorchScript, checked against PyTorch.

The export runs the exported model at two input sizes, compares it with the PyTorch model and
fails when the maximum absolute difference exceeds ``export.atol``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from segtrain.commands.predict import metadata_path
from segtrain.config import check_writable
from segtrain.errors import SegtrainError
from segtrain.runtime.trainer import output_dir
from segtrain.tasks import load_task

#: ONNX exporters in the order tried: torch.export's, the current one (opset 18 and up), then the
#: TorchScript-based one, deprecated since torch 2.9 but able to trace the size-dependent Python branches
#: that torch.export rejects (U-Net's crop, for one).
ONNX_EXPORTERS = ("torch.export", "torchscript")


def export_onnx(
    model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int, exporter: str = "torchscript"
) -> None:
    """ONNX with dynamic batch, height and width, by ``exporter`` (one of ``ONNX_EXPORTERS``)."""
    names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": opset}
    if exporter == "torch.export":
        batch, height, width = (torch.export.Dim(name) for name in ("batch", "height", "width"))
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: batch, 2: height, 3: width},),
            external_data=False,  # one file, renamed into place whole: no weights left in a side file
            verbose=False,
            **names,
        )
        return
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        dynamic_axes={
            "image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        },
        dynamo=False,
        **names,
    )


def embed_metadata(path: Path, meta: dict) -> None:
    """The metadata also travels inside the ONNX file (``metadata_props``), where ONNX tools show it."""
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def onnx_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def check_output(path: Path) -> None:
    """Refuses a directory, a path under a file, or an unwritable place, before the model is exported."""
    if path.is_dir():
        raise SegtrainError(f"output={path} is a directory; pass a file path such as {path / 'model.onnx'}")
    check_writable(path.parent, key="output")
    if path.exists() and not os.access(path, os.W_OK):
        raise SegtrainError(f"output={path} exists and is read-only; pass another path")


def compare(exported, model: torch.nn.Module, samples: list[torch.Tensor], label: str) -> float:
    """The largest difference between the exported model and PyTorch over ``samples``."""
    worst = 0.0
    for sample in samples:
        diff = (exported(sample) - model(sample)).abs().max().item()
        print(f"{label} vs PyTorch at {tuple(sample.shape)}: max abs diff {diff:.3e}")
        worst = max(worst, diff)
    return worst


def write_and_compare(
    model: torch.nn.Module, samples: list[torch.Tensor], path: Path, fmt: str, opset: int, atol: float
) -> tuple[float, str]:
    """Exports ``model`` to ``path``; returns the largest difference from PyTorch over ``samples`` and the
    exporter that wrote the file (ONNX: the first of ``ONNX_EXPORTERS`` that works within ``atol``)."""
    with torch.no_grad():
        if fmt != "onnx":
            torch.jit.trace(model, samples[0], check_trace=False).save(str(path))
            return compare(torch.jit.load(str(path)), model, samples, fmt), "torch.jit.trace"
        exporters = ONNX_EXPORTERS if opset >= 18 else ONNX_EXPORTERS[1:]
        for exporter in exporters[:-1]:
            try:
                export_onnx(model, samples[0], path, opset, exporter)
                worst = compare(onnx_runner(path), model, samples, f"onnx ({exporter} exporter)")
                if worst <= atol:
                    return worst, exporter
                reason = f"it differs from PyTorch by {worst:.3e}"
            except Exception as err:
                reason = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()[0][:160]
            print(f"the {exporter} ONNX exporter does not fit this model ({reason}); trying the next one")
        export_onnx(model, samples[0], path, opset, exporters[-1])
        return compare(onnx_runner(path), model, samples, f"onnx ({exporters[-1]} exporter)"), exporters[-1]


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
    task, merged = load_task(cfg, data_root=False)
    model = task.model.eval()
    sizes = [tuple(size) for size in cfg.export.check_sizes]
    channels = merged.data.in_channels
    samples = [torch.randn(batch, channels, *size) for batch, size in zip((1, 2), sizes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place once checked: a failed export keeps the old file.
    written = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        worst, exporter = write_and_compare(model, samples, written, fmt, cfg.export.opset, cfg.export.atol)
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
            "input": "float32 [batch, C, H, W], RGB, (x / 255 - mean) / std",
            "output": "logits [batch, num_classes, H, W]",
            # segtrain predict applies them to ONNX models too, as it does to checkpoints.
            "val_transforms": OmegaConf.to_container(merged.data.val_transforms, resolve=True),
            "max_abs_diff": worst,
            "atol": cfg.export.atol,
        }
        if fmt == "onnx":
            embed_metadata(written, meta)
        os.replace(written, path)
    finally:
        written.unlink(missing_ok=True)
    metadata_path(path).write_text(json.dumps(meta, indent=2))
    print(
        f"exported {path} (max abs diff {worst:.3e} <= atol {cfg.export.atol}); metadata in "
        f"{metadata_path(path)}"
    )
    return path
