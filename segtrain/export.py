"""``segtrain export``: ONNX (dynamic batch, H, W) or TorchScript, checked against PyTorch.

The export runs the exported model at two input sizes, compares it with the PyTorch model and
fails when the maximum absolute difference exceeds ``export.atol``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from segtrain.engine import load_task, output_dir
from segtrain.errors import SegtrainError
from segtrain.predict import onnx_metadata_path


def export_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
        opset_version=opset,
        dynamo=False,
    )


def onnx_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def export(cfg: DictConfig) -> Path:
    fmt = cfg.format
    if fmt not in ("onnx", "torchscript"):
        raise SegtrainError(f"format={fmt} is not supported; use format=onnx or format=torchscript")
    task, merged = load_task(cfg)
    model = task.model.eval()
    sizes = [tuple(size) for size in cfg.export.check_sizes]
    channels = merged.data.in_channels
    samples = [torch.randn(batch, channels, *size) for batch, size in zip((1, 2), sizes)]
    path = Path(cfg.output) if cfg.get("output") else output_dir(cfg) / ("model.onnx" if fmt == "onnx" else "model.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "onnx":
            export_onnx(model, samples[0], path, cfg.export.opset)
            exported = onnx_runner(path)
        else:
            traced = torch.jit.trace(model, samples[0], check_trace=False)
            traced.save(str(path))
            exported = torch.jit.load(str(path))
        worst = 0.0
        for sample in samples:
            diff = (exported(sample) - model(sample)).abs().max().item()
            print(f"{fmt} vs PyTorch at {tuple(sample.shape)}: max abs diff {diff:.3e}")
            worst = max(worst, diff)
    if worst > cfg.export.atol:
        path.unlink()
        raise SegtrainError(
            f"exported {fmt} model differs from PyTorch by {worst:.3e} > export.atol={cfg.export.atol}; "
            "the file was removed. Report the model, or raise export.atol if the difference is expected."
        )
    meta = {**task.metadata(), "format": fmt, "input": "float32 [batch, C, H, W], RGB, (x / 255 - mean) / std",
            "output": "logits [batch, num_classes, H, W]", "max_abs_diff": worst, "atol": cfg.export.atol}
    onnx_metadata_path(path).write_text(json.dumps(meta, indent=2))
    print(f"exported {path} (max abs diff {worst:.3e} <= atol {cfg.export.atol}); metadata in {onnx_metadata_path(path)}")
    return path
