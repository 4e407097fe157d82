"""``segtrain COMMAND --help``: what the command does, its own keys, its config groups, two examples.

Written for each command and printed without building anything (no torch, no model import), so it
answers at once. ``--help-all`` adds Hydra's help with the command's whole composed config.
"""

from __future__ import annotations

INFERENCE_KEYS = [
    ("inference.mode", "whole | slide (sliding windows for images larger than the training crop)"),
    ("inference.crop_size", "slide: window [H, W] (default: data.crop_size)"),
    ("inference.stride", "slide: step between windows (default: half the window)"),
    ("inference.flip", "true: average with the horizontally flipped image"),
    ("inference.scales", "test-time scales, e.g. [0.75,1.0,1.25]"),
    ("inference.crf", "true: refine with DeepLab's dense CRF (RGB images)"),
    ("inference.score_resolution", "original (each image's own size, the default) | transformed"),
    ("inference.score_threshold", "task=instance: detections drawn in overlays score above it (0.5)"),
    ("inference.mask_threshold", "task=instance: mask probability cut to binary (0.5)"),
]

#: The config groups in the order a user meets them, one concern each (``segtrain list`` and train's help).
GROUPS = (
    "task",
    "model",
    "data",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
)

#: command -> (what it does, [(key, one line)], [config groups], [examples])
COMMAND_HELP = {
    "train": (
        "Train a model: compose task, data, model, loss, optimizer, scheduler and trainer, fit, validate\n"
        "every epoch, and leave checkpoints, curves.png, overlays/ and val_metrics.json in the run\n"
        "directory.",
        [
            ("data.root", "where the dataset lies (every data config but shapes needs it)"),
            ("optimizer.lr", "learning rate (auto_scale_lr.enable=true scales it to the batch size)"),
            ("data.batch_size", "images per process and step"),
            ("data.crop_size", "training crop [H, W]"),
            ("data.num_workers", "loader processes (default: from the machine's cores)"),
            ("trainer.max_epochs", "epochs to train"),
            ("trainer.devices", "GPUs or processes (trainer=ddp for several)"),
            ("trainer.threads", "torch CPU threads per process (default: from cores and workers)"),
            ("resume", "true: continue the newest run of this run_name; or a checkpoint path"),
            ("run_name", "runs are grouped under outputs/<run_name>/ (default: <data>-<model>)"),
            ("seed", "seeds torch, numpy and the augmentations"),
            *INFERENCE_KEYS,
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
            ("ckpt", "the .ckpt written by segtrain train (required)"),
            ("data.root", "evaluate on data elsewhere (same classes)"),
            ("data.split", "the split to score (default: the validation split)"),
            ("save_predictions", "true: also write predictions/ (dataset encoding; or COCO results json)"),
            *INFERENCE_KEYS,
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
            ("ckpt", "a .ckpt, or a model.onnx / model.pt with its .json metadata (required)"),
            ("input", "an image file or a directory of images (required)"),
            ("output", "the directory for the masks, outside the input (required)"),
            *INFERENCE_KEYS,
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
            ("ckpt", "the .ckpt to export (required)"),
            ("format", "onnx | torchscript"),
            ("output", "the file to write (default: the run directory's model.onnx / model.pt)"),
            ("export.check_sizes", "the [H, W] sizes compared with PyTorch (batch 1, then 2)"),
            ("export.atol", "largest difference from PyTorch allowed"),
            ("export.opset", "ONNX opset"),
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
            ("bench.steps", "batches per loop"),
            ("bench.warmup", "first steps of each loop left out"),
            ("bench.rounds", "plain / segtrain loops alternate this many times"),
            ("bench.data", "true: time the training DataLoader alone"),
            ("bench.data_workers", "with bench.data=true: worker counts to time, e.g. [0,4,8]"),
            ("bench.peak_tflops", "the device's peak for MFU (default: known GPUs' data sheets)"),
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
            ("data.root", "where the dataset lies"),
            ("data.split", "the split to scan (default: the validation split)"),
            ("check.workers", "scan processes (default: one per core)"),
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

    what, keys, groups, examples = COMMAND_HELP[command]
    width = max(len(key) for key, _ in keys)
    lines = [f"usage: segtrain {command} [key=value ...]", "", what, "", "keys:"]
    lines += [f"  {key:<{width}}  {text}" for key, text in keys]
    if groups:
        available = config_groups()
        lines += ["", "config groups (group=choice):"]
        lines += [f"  {group + ':':<16} {', '.join(available.get(group, []))}" for group in groups]
    lines += ["", "examples:", *(f"  {example}" for example in examples)]
    lines += ["", f"segtrain {command} --help-all also prints Hydra's help with the whole composed config."]
    return "\n".join(lines)
