"""One learning table for the 25 systems of the reading list (benchmarks/zoo.md).

    python scripts/bench_zoo.py [--epochs 2] [--only name ...] [--work outputs/zoo]
    python scripts/bench_zoo.py --gpu --root voc=/data/VOC2012 --root cityscapes=/data/cityscapes ...

On a CPU (the default), every system trains from scratch at small width for a fixed short budget on real
data: CamVid (SegNet's split) for the semantic systems, ISBI 2012's cells converted to COCO instances for the
instance systems, the embedded referring set for text_objseg, and the ISBI 2012 stack cut into NIfTI
volumes for V-Net. Each row holds the score against the trivial baseline of the same data (majority class;
Otsu + connected regions; the expression-blind model) and, beside it, the paper's own number on the paper's
data, read from the system's recipe (conf/experiment/*.yaml, "# Paper:").

With ``--gpu`` each system runs its paper recipe (``experiment=<recipe>``) at full size on a GPU, for
``--steps`` iterations, on the dataset roots given with ``--root name=path``.

Each finished row is kept in <work>/<name>/row.json, so a partial run (``--only``) adds to the table; the
table lists the rows not run yet as such; ``--only`` with no name rewrites the table from the kept rows (with
its ``--note`` paragraphs).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_instances_isbi import baseline as otsu_instances  # noqa: E402
from bench_instances_isbi import mask_ap, split  # noqa: E402
from readme_tables import paper_line  # noqa: E402

from segtrain.data.labels_to_coco import convert  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CAMVID_CLASSES, CAMVID_VOID = 11, 11
VGG = ["model.backbone.pretrained=false", "+model.backbone.width=0.25", "optimizer.lr=0.001"]
RESNET = ["model.backbone.name=resnet18", "model.backbone.pretrained=false"]
#: CPU rows: the model config and its small-width overrides (from scratch: no ImageNet weights offline).
SEMANTIC = {
    "fcn8s": ["model=fcn8s", *VGG, "model.width=256"],
    "parsenet": ["model=parsenet", *VGG, "model.fc_channels=128"],
    "deeplabv1": ["model=deeplabv1", *VGG, "model.fc_channels=128"],
    "deeplabv2": ["model=deeplabv2", *RESNET],
    "deeplabv3": ["model=deeplabv3", *RESNET, "model.backbone.multi_grid=null"],
    "deeplabv3plus": ["model=deeplabv3plus", *RESNET, "model.backbone.multi_grid=null"],
    # A 12x12 local window: the paper's 50x50 costs 19 s per 360x480 image on this CPU.
    "dpn": ["model=dpn", *VGG, "model.fc_channels=128", "model.local_size=12"],
    # Its unpadded 7x7 fc6 needs 193 px or more: 224 px crops, validation at full size.
    "deconvnet": [
        "model=deconvnet",
        *VGG,
        "model.width=256",
        "data.crop_size=[224,224]",
        "data.val_transforms=[]",
    ],
    "segnet": ["model=segnet", *VGG],
    "unet": ["model=unet", "model.base_channels=16"],
    "fpn": ["model=fpn", *RESNET, "model.fpn_channels=64", "model.head_channels=64"],
    "pspnet": ["model=pspnet", *RESNET, "model.channels=64"],
    "lstm2d": ["model=lstm2d", "model.lstm_channels=[8,16,32]", "model.hidden_channels=[16,32]"],
    "reseg": ["model=reseg", *VGG, "model.freeze_encoder=false"],
    "graph_lstm": [
        "model=graph_lstm",
        *VGG,
        "model.fc_channels=128",
        "model.hidden=64",
        "model.superpixels.n_segments=100",
    ],
    "attention_to_scale": [
        "model=attention_to_scale",
        *VGG,
        "model.fc_channels=128",
        "model.attention_channels=64",
    ],
    "reverse_attention": ["model=reverse_attention", *VGG, "model.fc_channels=128"],
    "pan": ["model=pan", *RESNET, "model.channels=64"],
    "danet": ["model=danet", *RESNET, "model.channels=64", "inference.mode=whole"],
    "adversarial": [
        "model=pan",
        *RESNET,
        "model.channels=64",
        "adversarial=product",
        "adversarial.width=0.25",
    ],
}
INSTANCE = {"mask_rcnn": [], "panet": [], "masklab": ["model.head_channels=64", "model.refine_channels=64"]}
SYSTEMS = [*SEMANTIC, "vnet", *INSTANCE, "text_objseg"]


def recipe_of(system: str) -> tuple[str, list[str]]:
    """The system's paper recipe and its "# Paper:" line (number, metric, the paper's data)."""
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        paper = paper_line(path)
        text = path.read_text()
        model = re.search(r"override /model: (\w+)", text)
        owner = "adversarial" if "override /adversarial:" in text else model and model.group(1)
        if paper and owner == system:
            return path.stem, paper
    raise SystemExit(f"no paper recipe for {system}")


def segtrain(*args: str, cwd: Path) -> float:
    command = [sys.executable, "-m", "segtrain", *args]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return time.perf_counter() - started


def final_score(run: Path, key: str) -> float:
    """The last validation's ``key`` from the run's val_metrics.json."""
    return float(json.loads((run / "val_metrics.json").read_text())[key])


def majority_miou(masks: list[np.ndarray], train_masks: list[np.ndarray], classes: int, void: int) -> float:
    """mIoU of predicting the train split's most frequent class everywhere, classes absent from both the
    prediction and the ground truth left out (as segtrain scores)."""
    counts = sum(np.bincount(m[m != void].ravel(), minlength=classes)[:classes] for m in train_masks)
    majority = int(np.argmax(counts))
    truth = sum(np.bincount(m[m != void].ravel(), minlength=classes)[:classes] for m in masks)
    present = [c for c in range(classes) if truth[c] > 0 or c == majority]
    ious = [truth[c] / truth.sum() if c == majority else 0.0 for c in present]
    return float(np.mean(ious))


def camvid_baseline(root: Path) -> float:
    read = lambda folder: [np.asarray(Image.open(p)) for p in sorted((root / folder).glob("*.png"))]  # noqa: E731
    return majority_miou(read("valannot"), read("trainannot"), CAMVID_CLASSES, CAMVID_VOID)


def isbi_volumes(root: Path, work: Path) -> tuple[Path, float]:
    """The 30-slice ISBI stack cut into 16 volumes of 30 x 128 x 128 (x, y, z order for NIfTI), cell
    interior labelled 1, as a Decathlon task; and the majority (all-background or all-cell) baseline's mIoU
    on the volumes the Decathlon reader holds out."""
    import nibabel as nib

    images = np.stack(
        [np.asarray(Image.open(p).convert("L")) for p in sorted((root / "image").glob("*.png"))]
    )
    labels = np.stack([np.asarray(Image.open(p)) > 127 for p in sorted((root / "label").glob("*.png"))])
    task = work / "Task99_ISBI"
    training = []
    for index in range(16):
        y, x = divmod(index, 4)
        cut = (slice(None), slice(128 * y, 128 * (y + 1)), slice(128 * x, 128 * (x + 1)))
        for folder, data in (
            ("imagesTr", images[cut].astype(np.float32)),
            ("labelsTr", labels[cut].astype(np.uint8)),
        ):
            (task / folder).mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(data.transpose(2, 1, 0), np.eye(4)),
                str(task / folder / f"isbi_{index:03d}.nii.gz"),
            )
        training.append(
            {"image": f"./imagesTr/isbi_{index:03d}.nii.gz", "label": f"./labelsTr/isbi_{index:03d}.nii.gz"}
        )
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "ISBI2012",
                "modality": {"0": "EM"},
                "labels": {"0": "membrane", "1": "cell"},
                "numTraining": 16,
                "training": training,
                "test": [],
            }
        )
    )
    share = labels.mean()
    # Predicting the majority class everywhere: its IoU is its share, the other class's 0.
    return task, float(max(share, 1 - share) / 2)


def run_row(system: str, args, work: Path) -> dict:
    run = work / system / "run"
    budget = [f"trainer.max_epochs={args.epochs}", f"trainer.check_val_every_n_epoch={args.epochs}"]
    common = [f"hydra.run.dir={run}", "callbacks.progress_bar=null", "trainer.num_sanity_val_steps=0"]
    if system in SEMANTIC:
        extra = [] if system == "unet" else ["~model.base_channels"]
        camvid = args.camvid
        overrides = ["experiment=camvid_cpu", f"data.root={camvid}", *extra, *SEMANTIC[system]]
        seconds = segtrain(*overrides, *budget, *common, cwd=ROOT)
        return {
            "data": "CamVid val (101 images at 360x480)",
            "metric": "mIoU",
            "score": final_score(run, "mIoU"),
            "baseline": camvid_baseline(camvid),
            "baseline_name": "majority class",
            "seconds": seconds,
            "command": " ".join(["segtrain", *overrides, *budget]),
        }
    if system == "vnet":
        task, base = isbi_volumes(args.isbi, work / "vnet")
        overrides = [
            "experiment=vnet_decathlon",
            f"data.root={task}",
            "data.crop_size=[16,64,64]",
            "data.batch_size=4",
            "model.base_channels=8",
            "optimizer.lr=0.01",
            "inference.crop_size=[16,64,64]",
        ]
        seconds = segtrain(*overrides, *budget, *common, cwd=ROOT)
        return {
            "data": "ISBI 2012 stack as 16 NIfTI volumes (held-out volumes)",
            "metric": "mIoU",
            "score": final_score(run, "mIoU"),
            "baseline": base,
            "baseline_name": "majority class",
            "seconds": seconds,
            "command": " ".join(["segtrain", *overrides, *budget]),
        }
    if system in INSTANCE:
        coco = work / system / "coco"
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        data = convert(args.isbi / "image", args.isbi / "label", {255: "cell"}, coco / "all.json", 10, 4)
        split(data, coco)
        truth_path = coco / "annotations" / "val.json"
        overrides = [
            "task=instance",
            f"model={system}",
            "data=instances_folder",
            f"data.root={coco}",
            f"data.image_dir={args.isbi / 'image'}",
            "data.in_channels=3",
            "data.batch_size=4",
            *RESNET,
            "model.backbone.trainable_layers=5",
            "model.min_size=256",
            "model.max_size=256",
            "model.fpn_channels=64",
            "model.representation_size=256",
            "model.box_batch_size_per_image=256",
            "model.anchor_sizes=[8,16,32,64,128]",
            "model.box_detections_per_img=300",
            "optimizer.lr=0.001",
            "data.train_transforms=[{_target_: albumentations.HorizontalFlip},"
            "{_target_: albumentations.VerticalFlip}]",
            *([] if system == "masklab" else ["model.mask_channels=64"]),
            *INSTANCE[system],
        ]
        epochs = [
            f"trainer.max_epochs={args.instance_epochs}",
            f"trainer.check_val_every_n_epoch={args.instance_epochs}",
        ]
        seconds = segtrain(*overrides, *epochs, *common, cwd=coco)
        segtrain(
            "eval",
            f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
            "save_predictions=true",
            f"hydra.run.dir={work / system / 'eval'}",
            cwd=coco,
        )
        detections = json.loads((work / system / "eval" / "predictions" / "detections.json").read_text())
        truth = json.loads(truth_path.read_text())
        return {
            "data": "ISBI 2012 cells as COCO instances (6 val images)",
            "metric": "mask AP",
            "score": mask_ap(truth_path, detections)[0],
            "baseline": mask_ap(truth_path, otsu_instances(args.isbi / "image", truth))[0],
            "baseline_name": "Otsu + connected regions",
            "seconds": seconds,
            "command": " ".join(["segtrain", *overrides, *epochs]),
        }
    # text_objseg: the embedded referring set, against the same model blind to the expression.
    overrides = ["task=referring"]
    seconds = segtrain(*overrides, *budget, *common, cwd=ROOT)
    blind = work / system / "blind"
    segtrain(
        *overrides,
        "model.blind=expression",
        *budget,
        f"hydra.run.dir={blind}",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
        cwd=ROOT,
    )
    return {
        "data": "embedded shapes_referring val",
        "metric": "overall IoU",
        "score": final_score(run, "overall_IoU"),
        "baseline": final_score(blind, "overall_IoU"),
        "baseline_name": "expression-blind model",
        "seconds": seconds,
        "command": " ".join(["segtrain", *overrides, *budget]),
    }


def gpu_row(system: str, args, work: Path) -> dict:
    recipe, _ = recipe_of(system)
    data = re.search(
        r"override /data: (\w+)", (ROOT / "conf" / "experiment" / f"{recipe}.yaml").read_text()
    ).group(1)
    if data not in args.roots:
        raise RuntimeError(f"--root {data}=PATH is needed for experiment={recipe}")
    run = work / system / "run"
    overrides = [
        f"experiment={recipe}",
        f"data.root={args.roots[data]}",
        "trainer=gpu",
        f"trainer.max_steps={args.steps}",
        "trainer.max_epochs=-1",
        "trainer.check_val_every_n_epoch=null",
        f"trainer.val_check_interval={args.steps}",
    ]
    seconds = segtrain(*overrides, f"hydra.run.dir={run}", "callbacks.progress_bar=null", cwd=ROOT)
    metrics = json.loads((run / "val_metrics.json").read_text())
    metric = metrics["monitor"].removeprefix("val/")
    return {
        "data": data,
        "metric": metric,
        "score": float(metrics[metric]),
        "baseline": float("nan"),
        "baseline_name": "",
        "seconds": seconds,
        "command": " ".join(["segtrain", *overrides]),
    }


def table(work: Path, machine: str, notes: list[str]) -> str:
    lines = [
        "# The zoo's learning table",
        "",
        f"Made by `python scripts/bench_zoo.py` ({machine}). Each system trains from scratch at small",
        "width for a short fixed budget on real data; the score is its last validation, beside the trivial",
        "baseline of the same data. The paper's number is on the paper's data at full size: it is there so",
        "that nobody mistakes one for the other, not to be compared with the score. Each row's budget is",
        "in its command (trainer.max_epochs).",
        "",
        *(line for note in notes for line in (note, "")),
        "| system | data | metric | score | baseline | score - baseline | paper's number (its data) "
        "| train s | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        recipe, (number, metric, where) = recipe_of(system)
        paper = f"{number} {metric} ({where})"
        path = work / system / "row.json"
        if not path.is_file():
            lines.append(f"| {system} | not run yet | | | | | {paper} | | |")
            continue
        row = json.loads(path.read_text())
        if "error" in row:
            lines.append(f"| {system} | failed: {row['error'][:120]} | | | | | {paper} | | |")
            continue
        lines.append(
            f"| {system} | {row['data']} | {row['metric']} | {row['score']:.3f} | {row['baseline']:.3f} "
            f"({row['baseline_name']}) | {row['score'] - row['baseline']:+.3f} | {paper} "
            f"| {row['seconds']:.0f} | `{row['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="CPU: epochs of the semantic and referring rows"
    )
    parser.add_argument("--instance-epochs", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None, choices=SYSTEMS)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "zoo")
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--isbi", type=Path, default=SHARED / "isbi2012-membranes")
    parser.add_argument("--gpu", action="store_true", help="the paper recipes at full size on a GPU")
    parser.add_argument("--steps", type=int, default=2000, help="GPU: iterations per recipe")
    parser.add_argument("--root", action="append", default=[], help="GPU: name=path of a dataset root")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "zoo.md")
    parser.add_argument("--machine", default="2 CPU cores, no GPU")
    parser.add_argument("--note", action="append", default=[], help="a paragraph under the table's header")
    args = parser.parse_args()
    args.roots = dict(item.split("=", 1) for item in args.root)
    work = args.work.resolve()
    for system in args.only if args.only is not None else SYSTEMS:
        (work / system).mkdir(parents=True, exist_ok=True)
        try:
            row = gpu_row(system, args, work) if args.gpu else run_row(system, args, work)
        except (RuntimeError, OSError, KeyError, ValueError) as error:
            row = {"error": " ".join(str(error).split())[-300:]}
        (work / system / "row.json").write_text(json.dumps(row, indent=1))
        print(system, row, flush=True)
        args.output.write_text(table(work, args.machine, args.note))
    args.output.write_text(table(work, args.machine, args.note))


if __name__ == "__main__":
    main()
