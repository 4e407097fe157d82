"""``segtrain predict``: palette PNG masks and overlays from a checkpoint or an exported ONNX model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from segtrain.data.io import IMAGE_SUFFIXES, list_images, read_image
from segtrain.errors import SegtrainError
from segtrain.inference import predict_probs
from segtrain.visualize import blend, palette_image



def list_inputs(path: str) -> list[Path]:
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SegtrainError(f"input={path} does not exist; pass an image file or a directory of images")
    files = list_images(source)
    if not files:
        raise SegtrainError(f"input={path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def onnx_metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def load_onnx(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    import onnxruntime as ort

    meta_path = onnx_metadata_path(path)
    if not meta_path.is_file():
        raise SegtrainError(f"{meta_path} is missing: segtrain export writes it beside {path.name}; re-export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])

    return run, json.loads(meta_path.read_text())


def predict(cfg: DictConfig) -> Path:
    if not cfg.get("input") or not cfg.get("output"):
        raise SegtrainError("predict needs input=IMAGE_OR_DIR and output=DIR")
    inputs = list_inputs(cfg.input)
    ckpt = Path(cfg.ckpt)
    if ckpt.suffix == ".onnx":
        if not ckpt.is_file():
            raise SegtrainError(f"ckpt={ckpt} does not exist")
        model, meta = load_onnx(ckpt)
        inference = OmegaConf.to_container(cfg.inference, resolve=True)
        in_channels = len(meta["mean"])
    else:
        from segtrain.engine import load_task

        task, merged = load_task(cfg)
        model, meta = task.model, task.metadata()
        inference = OmegaConf.to_container(merged.inference, resolve=True)
        in_channels = merged.data.in_channels
    out_dir = Path(cfg.output)
    overlay_dir = out_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1) * 255
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1) * 255
    with torch.inference_mode():
        for path in inputs:
            image = read_image(path, in_channels)
            rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
            pred = predict_probs(model, (rgb.float() - mean) / std, image=rgb, **inference).argmax(1)[0]
            pred = pred.numpy().astype(np.uint8)
            palette_image(pred, meta["palette"]).save(out_dir / f"{path.stem}.png")
            Image.fromarray(blend(image, pred, meta["palette"])).save(overlay_dir / f"{path.stem}.jpg", quality=90)
    print(f"wrote {len(inputs)} masks to {out_dir} and overlays to {overlay_dir}")
    return out_dir
