"""``segtrain COMMAND --help``: what the command does, its own keys, its config groups, two examples.

Written for each command and printed without building anything (no torch, no model import), so it
answers at once: the keys' lines are ``segtrain.schema``'s descriptions (the tasks' own keys included) with
the defaults conf/ gives them. ``--help-all`` adds Hydra's help with the command's whole composed config.
"""

from __future__ import annotations

import textwrap

#: Key lines wrap at this width.
WIDTH = 110

#: Every command that reads images with a model takes the task's inference keys (each task's ``keys``).
INFERENCE = "inference.*"

#: The config groups in the order a user meets them, one concern each (``segtrain list`` and train's help).
GROUPS = (
    "task",
    "model",
    "data",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "runtime",
    "logger",
    "callbacks",
    "experiment",
    "debug",
)

#: command -> (what it does, [keys], [config groups], [examples])
COMMAND_HELP = {
    "train": (
        "Train a model: compose task, data, model, loss, optimizer, scheduler and trainer, fit, validate\n"
        "every epoch, and leave checkpoints, curves.png, overlays/ and val_metrics.json in the run\n"
        "directory.",
        [
            "data.root",
            "optimizer.lr",
            "data.batch_size",
            "data.crop_size",
            "data.num_workers",
            "trainer.max_epochs",
            "trainer.devices",
            "runtime.threads",
            "resume",
            "run_name",
            "seed",
            INFERENCE,
        ],
        [*GROUPS, "hparams_search"],
        [
            "segtrain model=deeplabv3plus data=voc data.root=/data/VOCdevkit/VOC2012 trainer=gpu",
            "segtrain -m optimizer.lr=0.01,0.001 debug=limit      a two-run sweep, a few batches each",
            "segtrain task=instance model=mask_rcnn data=coco_instances data.root=/data/coco trainer=gpu",
        ],
    ),
    "eval": (
        "Evaluate a checkpoint on data.split with the config it was trained with (semantic: mIoU, Dice,\n"
        "accuracy per class; instance: COCO box and mask AP), metrics.json and a per-class chart;\n"
        "command-line keys replace the stored ones.",
        [
            "ckpt",
            "data.root",
            "data.split",
            "save_predictions",
            INFERENCE,
        ],
        ["data", "trainer"],
        [
            "segtrain eval ckpt=outputs/voc-deeplabv3plus/<run>/checkpoints/best.ckpt data.split=val",
            "segtrain eval ckpt=best.ckpt inference.mode=slide inference.flip=true save_predictions=true",
        ],
    ),
    "predict": (
        "Predict for images, at each image's own size, from a checkpoint or from a model exported by\n"
        "segtrain export (ONNX or TorchScript): palette PNGs and overlays (semantic), or COCO results json\n"
        "and instance overlays (instance: inference.score_threshold, inference.mask_threshold).",
        [
            "ckpt",
            "input",
            "output",
            INFERENCE,
        ],
        ["trainer"],
        [
            "segtrain predict ckpt=best.ckpt input=photos/ output=masks/",
            "segtrain predict ckpt=model.onnx input=street.jpg output=out/ inference.flip=true",
        ],
    ),
    "export": (
        "Export a checkpoint's model to ONNX (dynamic H, W; batch too for semantic models; detectors\n"
        "with their masks) or TorchScript, checked against PyTorch at two sizes; writes <file>.json beside\n"
        "it with the task, classes, palette and normalisation.",
        [
            "ckpt",
            "format",
            "output",
            "export.check_sizes",
            "export.atol",
            "export.opset",
        ],
        [],
        [
            "segtrain export ckpt=best.ckpt format=onnx output=model.onnx",
            "segtrain export ckpt=best.ckpt format=torchscript export.check_sizes=[[512,512],[480,640]]",
        ],
    ),
    "bench": (
        "Time segtrain's training step against a hand-written PyTorch loop on the same device, precision\n"
        "and memory format: images/s, TFLOP/s, MFU and peak memory; or the data loader alone.",
        [
            "bench.steps",
            "bench.warmup",
            "bench.rounds",
            "bench.data",
            "bench.data_workers",
            "bench.peak_tflops",
        ],
        ["model", "data", "trainer"],
        [
            "segtrain bench model=deeplabv3plus data.batch_size=16 trainer=gpu",
            "segtrain bench data=camvid data.root=/data/CamVid bench.data=true bench.data_workers=[2,4,8]",
        ],
    ),
    "check-data": (
        "Scan one split for unreadable files, unpaired images and masks, size mismatches and label-encoding\n"
        "slips (task=instance: the COCO json's boxes, categories, masks against boxes, missing images);\n"
        "print class shares and the fix of each error; exit non-zero on errors.",
        [
            "data.root",
            "data.split",
            "check.workers",
        ],
        ["data"],
        [
            "segtrain check-data data=cityscapes data.root=/data/cityscapes data.split=train",
            "segtrain check-data data=folder data.root=/data/mine data.label_map={255:1}",
        ],
    ),
}


def command_help(command: str) -> str:
    from segtrain.config import config_groups

    what, names, groups, examples = COMMAND_HELP[command]
    available = config_groups()
    keys = _key_lines(command, names, available.get("task", []))
    width = max(len(key) for key, _ in keys)
    lines = [f"usage: segtrain {command} [key=value ...]", "", what, "", "keys:"]
    for key, text in keys:
        lines += textwrap.wrap(
            text, WIDTH, initial_indent=f"  {key:<{width}}  ", subsequent_indent=" " * (width + 4)
        )
    if groups:
        lines += ["", "config groups (group=choice):"]
        lines += [f"  {group + ':':<16} {', '.join(available.get(group, []))}" for group in groups]
    lines += ["", "examples:", *(f"  {example}" for example in examples)]
    lines += ["", f"segtrain {command} --help-all also prints Hydra's help with the whole composed config."]
    return "\n".join(lines)


def _key_lines(command: str, names: list[str], tasks: list[str]) -> list[tuple[str, str]]:
    """(key, its schema description and default) for ``names``; ``INFERENCE`` stands for every task's
    own keys, each marked with the tasks that have it."""
    from segtrain.schema import KEYS
    from segtrain.tasks import spec_of

    texts = {key.name: key.help for key in KEYS}
    # A task's own key: {its description: the tasks that describe it so} (a key two tasks read differently,
    # such as inference.score_threshold, gets both).
    owners: dict[str, dict[str, list[str]]] = {}
    for task in tasks:
        for key in spec_of(task).keys:
            if key.help:
                owners.setdefault(key.name, {}).setdefault(key.help, []).append(task)
    for key, readings in owners.items():
        texts[key] = "; ".join(f"task={','.join(owned)}: {text}" for text, owned in readings.items())
    defaults = _defaults(command, tasks)
    lines = []
    for name in names:
        for key in owners if name == INFERENCE else [name]:
            text = texts[key]
            if key in defaults and "default" not in text:
                text += f" (default {defaults[key]})"
            lines.append((key, text))
    return lines


def _defaults(command: str, tasks: list[str]) -> dict[str, str]:
    """The values conf/ gives the keys ``--help`` lists, read from the files (not composed: no Hydra)."""
    from omegaconf import OmegaConf

    from segtrain.config import config_dir

    root = config_dir()
    files = [(root / "config.yaml", ""), (root / f"{command.replace('-', '_')}.yaml", "")]
    files += [(root / "runtime" / "cpu.yaml", "runtime.")]
    files += [(root / "inference" / f"{task}.yaml", "inference.") for task in reversed(tasks)]
    defaults = {}
    for path, prefix in files:
        if path.is_file():
            node = OmegaConf.load(path)
            node.pop("defaults", None)
            for key, value in _flat(OmegaConf.to_container(node, resolve=False), prefix):
                defaults[key] = value
    return defaults


def _flat(node: dict, prefix: str):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        elif value is not None:
            yield f"{prefix}{key}", "true" if value is True else "false" if value is False else str(value)
