"""``segtrain predict``: predictions for a directory of images from a checkpoint or an exported model.
A referring model also takes an expression: ``text="the blue square"`` for every image, or
``input=pairs.tsv`` of image and expression pairs.

The checkpoint's (or the export's) task writes them: palette PNG masks and overlays (semantic), COCO
results json and instance overlays (instance). Each image goes through the model's evaluation transforms
(``data.val_transforms``, which export records in its metadata), and its prediction is mapped back onto
the image's own grid. Files of the user's in the output directory are never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segtrain.commands.loading import EXPORTED_SUFFIXES, command_overrides, load_task, metadata_path
from segtrain.data.description import DEFAULT_TASK
from segtrain.data.io import IMAGE_SUFFIXES, list_images
from segtrain.errors import SegtrainError
from segtrain.run_directory import check_writable
from segtrain.runtime.checkpoint import check_targets, check_task, typed_values
from segtrain.tasks import task_spec
from segtrain.tasks.spec import Task


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


def load_exported(path: Path, spec: type[Task]) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """A model written by ``segtrain export`` (ONNX or TorchScript) of task ``spec``, and its metadata file.
    Like a checkpoint's weights, an exported model is a program: run only files you trust."""
    if not path.is_file():
        raise SegtrainError(f"ckpt={path} does not exist")
    meta_path = metadata_path(path)
    torchscript = EXPORTED_SUFFIXES[path.suffix] == "torchscript"
    if not meta_path.is_file() and torchscript:
        raise SegtrainError(
            f"{meta_path} is missing: segtrain export writes it beside {path.name}; re-export, or pass the "
            ".ckpt the model was exported from"
        )
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if torchscript:
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
    if meta is None:  # the copy export embeds in the ONNX file itself (metadata_props)
        embedded = session.get_modelmeta().custom_metadata_map
        if "classes" not in embedded:
            raise SegtrainError(
                f"{meta_path} is missing and {path} carries no segtrain metadata inside: it was not written "
                "by segtrain export. Re-export it, or pass the .ckpt the model was exported from"
            )
        meta = {key: json.loads(value) for key, value in embedded.items()}
    first = session.get_outputs()[0]
    channels = first.shape[1] if first.name == "logits" and spec.logits_per_class else None
    if isinstance(channels, int) and channels != len(meta["classes"]):
        raise SegtrainError(
            f"{path} outputs {channels} classes but its metadata {meta_path} lists {len(meta['classes'])}: "
            "the two files come from different exports; export the model again"
        )
    return session_runner(session), meta


def session_runner(session) -> Callable:
    """An onnxruntime session as a function: its inputs in order (an image; the referring task's also token
    ids); a tensor out, or a tuple of them."""
    input_names = [node.name for node in session.get_inputs()]

    def run(*inputs: torch.Tensor):
        feed = {name: x.numpy() for name, x in zip(input_names, inputs)}
        outputs = tuple(torch.from_numpy(output) for output in session.run(None, feed))
        return outputs[0] if len(outputs) == 1 else outputs

    return run


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
    ckpt = Path(cfg.ckpt)
    writer = task_spec(cfg)
    overrides = command_overrides()
    if ckpt.suffix in EXPORTED_SUFFIXES:
        run, meta = load_exported(ckpt, writer)
        check_task(meta.get("task", DEFAULT_TASK), writer.name, ckpt)
        # An export records its inference settings; inference.* typed on this command line replace them.
        inference = {
            **(meta.get("inference") or OmegaConf.to_container(cfg.get("inference") or {}, resolve=True))
        }
        inference.update(typed_values(cfg, "inference", overrides))
        transforms = OmegaConf.create({"val_transforms": meta.get("val_transforms", [])})
        check_targets(transforms, cfg, ckpt)
        transforms = transforms.val_transforms
    else:
        task, merged = load_task(cfg, overrides, data_root=False)
        run, meta = task.exported_module(), task.metadata()
        inference = writer.inference_settings(merged)
        transforms = merged.data.val_transforms
    requests = writer.prediction_requests(cfg, inputs)
    names = writer.prediction_names(requests)
    targets = [name for request in requests for name in writer.prediction_files(names[request])]
    targets += writer.prediction_summary_files
    foreign = [name for name in targets if (out_dir / name).exists() and name not in written_before]
    if foreign:
        raise SegtrainError(
            f"output={out_dir} already holds {len(foreign)} files that segtrain did not write "
            f"(e.g. {out_dir / foreign[0]}); they would be overwritten. Pass an empty or new output directory"
        )
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    # Recorded before writing, so that a run killed midway still owns the files it wrote.
    (out_dir / MANIFEST).write_text(json.dumps(sorted(written_before | set(targets))))
    with torch.inference_mode():
        message = writer.predict_images(
            run, meta, inference, instantiate(transforms), requests, names, out_dir
        )
    print(message)
    return out_dir
