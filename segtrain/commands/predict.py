"""``segtrain predict``: palette PNG masks and overlays from a checkpoint or an exported ONNX model.

Each image goes through the model's evaluation transforms (``data.val_transforms``, which export
records in its metadata), and its prediction is mapped back onto the image's own grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from segtrain.config import check_writable
from segtrain.data.io import IMAGE_SUFFIXES, list_images, read_image
from segtrain.data.transforms import compose, transform_item
from segtrain.errors import SegtrainError
from segtrain.inference import class_ids, predict_probs, score_resolution, to_original_size
from segtrain.runtime.checkpoint import check_targets
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


def metadata_path(model_path: Path) -> Path:
    """``model.onnx.json`` beside ``model.onnx``, ``model.pt.json`` beside ``model.pt``: one metadata file
    per exported file, so exporting one never replaces the other's classes and normalisation."""
    return model_path.with_name(model_path.name + ".json")


#: Files ``segtrain export`` writes, which predict runs without a checkpoint.
EXPORTED_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript"}


def load_exported(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """A model written by ``segtrain export`` (ONNX or TorchScript) and its metadata file. Like a
    checkpoint's weights, an exported model is a program: run only files you trust."""
    if not path.is_file():
        raise SegtrainError(f"ckpt={path} does not exist")
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise SegtrainError(
            f"{meta_path} is missing: segtrain export writes it beside {path.name}; re-export, or pass the "
            ".ckpt the model was exported from"
        )
    meta = json.loads(meta_path.read_text())
    if EXPORTED_SUFFIXES[path.suffix] == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:
            raise SegtrainError(
                f"ckpt={path} is not a TorchScript model ({str(err).splitlines()[0][:200]}); pass the .ckpt "
                "written by segtrain train, or a model.pt written by segtrain export format=torchscript"
            ) from None
        return module, meta
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise SegtrainError(
            f"ckpt={path} is not a readable ONNX model ({str(err).splitlines()[0][:200]})"
        ) from None
    channels = session.get_outputs()[0].shape[1]
    if isinstance(channels, int) and channels != len(meta["classes"]):
        raise SegtrainError(
            f"{path} outputs {channels} classes but its metadata {meta_path} lists {len(meta['classes'])}: "
            "the two files come from different exports; export the model again"
        )
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])

    return run, meta


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """The mask name of each input: its stem, or its whole name where stems collide (a.png, a.jpg)."""
    stems: dict[str, int] = {}
    for path in inputs:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names: dict[Path, str] = {}
    for path in inputs:
        name = path.stem if stems[path.stem] == 1 else path.name.replace(".", "_")
        while name in names.values():  # a.png, a.jpg beside an a_png.png
            name += "_"
        names[path] = name
    return names


#: Lists what ``predict`` wrote into an output directory, so that a later run may replace those files
#: and never a file of the user's.
MANIFEST = ".segtrain-predict.json"


def check_output(output: Path, inputs: list[Path], source: Path) -> set[str]:
    """Refuses an output that is an input, inside the input, or a file; returns the files an earlier
    predict wrote there (which this run may replace)."""
    resolved = output.resolve()
    if resolved.exists() and not resolved.is_dir():
        raise SegtrainError(f"output={output} is an existing file; pass a directory for the masks")
    check_writable(resolved, key="output")
    source_dir = source.resolve() if source.is_dir() else source.resolve().parent
    if resolved == source_dir or (source.is_dir() and source_dir in resolved.parents):
        raise SegtrainError(
            f"output={output} is inside input={source}: masks would be written among the images "
            "(and read back as inputs next time). Pass an output directory outside the input"
        )
    if any(resolved == path.resolve() for path in inputs):
        raise SegtrainError(f"output={output} is one of the input images; pass a directory for the masks")
    try:  # an unreadable manifest owns nothing: every file there is then the user's
        return set(json.loads((resolved / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def predict(cfg: DictConfig) -> Path:
    if not cfg.get("input") or not cfg.get("output"):
        raise SegtrainError("predict needs input=IMAGE_OR_DIR and output=DIR")
    inputs = list_inputs(cfg.input)
    out_dir = Path(cfg.output)
    written_before = check_output(out_dir, inputs, Path(cfg.input))
    names = output_names(inputs)
    targets = [f"{names[path]}.png" for path in inputs] + [f"overlays/{names[path]}.jpg" for path in inputs]
    foreign = [name for name in targets if (out_dir / name).exists() and name not in written_before]
    if foreign:
        raise SegtrainError(
            f"output={out_dir} already holds {len(foreign)} files that segtrain did not write "
            f"(e.g. {out_dir / foreign[0]}); they would be overwritten. Pass an empty or new output directory"
        )
    ckpt = Path(cfg.ckpt)
    if ckpt.suffix in EXPORTED_SUFFIXES:
        model, meta = load_exported(ckpt)
        inference = OmegaConf.to_container(cfg.inference, resolve=True)
        in_channels = len(meta["mean"])
        transforms = OmegaConf.create({"val_transforms": meta.get("val_transforms", [])})
        check_targets(transforms, cfg, ckpt)
        transforms = transforms.val_transforms
    else:
        from segtrain.tasks import load_task

        task, merged = load_task(cfg, data_root=False)
        model, meta = task.model, task.metadata()
        inference = OmegaConf.to_container(merged.inference, resolve=True)
        in_channels = merged.data.in_channels
        transforms = merged.data.val_transforms
    original_size = score_resolution(inference) == "original"
    pipeline = compose(instantiate(transforms), track_extent=original_size)
    overlay_dir = out_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1) * 255
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1) * 255
    # Recorded before writing, so that a run killed midway still owns the files it wrote.
    (out_dir / MANIFEST).write_text(json.dumps(sorted(written_before | set(targets))))
    with torch.inference_mode():
        for path in inputs:
            original = read_image(path, in_channels)
            image, _, region = transform_item(pipeline, original, None, original_size)
            rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
            probs = predict_probs(model, (rgb.float() - mean) / std, image=rgb, **inference)
            shown = original if original_size else image
            pred = class_ids(to_original_size(probs, [{"size": shown.shape[:2], "region": region}]))[0]
            pred = pred.numpy().astype(np.uint8)
            palette_image(pred, meta["palette"]).save(out_dir / f"{names[path]}.png")
            Image.fromarray(blend(shown, pred, meta["palette"])).save(
                overlay_dir / f"{names[path]}.jpg", quality=90
            )
    print(f"wrote {len(inputs)} masks to {out_dir} and {len(inputs)} overlays to {overlay_dir}")
    return out_dir
