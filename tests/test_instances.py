"""Instance segmentation end to end: COCO data, the three models, COCO AP against pycocotools, predict,
export, check-data and the errors users meet."""

from __future__ import annotations

import contextlib
import io
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segtrain.data.datasets.coco_instances import CocoInstances
from segtrain.data.instances import InstanceDataModule
from segtrain.data.labels_to_coco import convert
from segtrain.models.mask_rcnn import MaskRCNN
from segtrain.models.masklab import MaskLab
from segtrain.models.panet import PANet
from tests.conftest import SHARED_DATA, checkpoints, run_cli
from tests.instances import SHAPES, TINY_DETECTOR, make_shapes_instances, write_coco_json
from tests.test_cli import assert_clean_error

TINY = dict(
    num_classes=3,
    backbone={"name": "resnet18", "trainable_layers": 5, "pretrained": False},
    fpn_channels=32,
    representation_size=64,
    min_size=64,
    max_size=96,
    box_batch_size_per_image=64,
    anchor_sizes=[8, 16, 32, 64, 128],
)


def test_mask_rcnn_has_torchvisions_parameter_counts():
    """The paper's R50-FPN with torchvision's settings (91 classes, frozen BatchNorm), and the v2 recipe."""
    with torch.device("meta"):
        v1 = MaskRCNN(backbone={"pretrained": False})
        v2 = MaskRCNN(variant="v2", backbone={"pretrained": False, "trainable_layers": 5})
    assert sum(p.numel() for p in v1.parameters()) == 44_401_393
    assert sum(p.numel() for p in v2.parameters()) == 46_359_409
    # The stem and first stage frozen, as the paper trains (torchvision's trainable_backbone_layers=3).
    assert sum(p.numel() for p in v1.backbone.body.parameters() if p.requires_grad) == 23_232_512
    heads = v1.roi_heads
    assert tuple(heads.box_roi_pool.output_size) == (7, 7) and tuple(heads.mask_roi_pool.output_size) == (
        14,
        14,
    )
    assert heads.fg_bg_sampler.batch_size_per_image == 512 and heads.fg_bg_sampler.positive_fraction == 0.25
    assert [m.out_channels for m in heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)] == [256] * 4


def _targets(images: list[torch.Tensor]) -> list[dict]:
    targets = []
    for image in images:
        mask = torch.zeros(1, *image.shape[-2:], dtype=torch.uint8)
        mask[0, 10:40, 12:50] = 1
        targets.append(
            {"boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([2]), "masks": mask}
        )
    return targets


@pytest.mark.parametrize(
    "switches",
    [{}, {"bottom_up_path": False}, {"adaptive_pooling": False}, {"fc_fusion": False}],
    ids=["all", "no-bottom-up", "no-adaptive-pooling", "no-fc-fusion"],
)
def test_panet_switches_change_the_network_and_train(switches):
    torch.manual_seed(0)
    model = PANet(**TINY, mask_channels=32, **switches)
    base = MaskRCNN(**TINY, mask_channels=32)
    assert sum(p.numel() for p in model.parameters()) != sum(p.numel() for p in base.parameters())
    images = [torch.rand(3, 64, 80), torch.rand(3, 71, 66)]
    losses = model(images, _targets(images))
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert outputs[1]["masks"].shape[-2:] == (71, 66)


def test_panet_fc_fusion_adds_a_rectified_fc_mask_and_group_norm_follows_each_conv():
    """The fc branch's 28x28 mask passes a ReLU before it is added to every class's logits (the authors'
    mask_fc); with group_norm, each conv of the path and the mask head is conv (no bias), GN, ReLU."""
    torch.manual_seed(0)
    model = PANet(**TINY, mask_channels=32).eval()
    head, predictor = model.roi_heads.mask_head, model.roi_heads.mask_predictor
    pooled = torch.randn(3, 4, 32, 14, 14)
    packed = head(pooled)
    features, fc_mask = packed[:, :32], F.pixel_shuffle(packed[:, 32:], 2)
    assert fc_mask.min() >= 0 and (fc_mask == 0).any() and fc_mask.max() > 0
    per_class = predictor.mask_fcn_logits(F.relu(predictor.conv5_mask(features)))
    assert torch.allclose(predictor(packed), per_class + fc_mask)
    grouped = PANet(**TINY, mask_channels=32, group_norm=True)
    heads = [grouped.backbone.steps, grouped.roi_heads.mask_head]
    convs = [
        m for head in heads for m in head.modules() if isinstance(m, torch.nn.Sequential) and len(m) == 3
    ]
    assert len(convs) == 3 * 2 + 4 + 3 + 2  # path steps, conv1 per level, conv2-4, the fc branch's two
    for conv, norm, relu in convs:
        assert conv.bias is None and isinstance(norm, torch.nn.GroupNorm) and isinstance(relu, torch.nn.ReLU)


def test_masklab_losses_and_outputs():
    torch.manual_seed(0)
    model = MaskLab(**TINY, head_channels=16, refine_channels=16)
    images = [torch.rand(3, 64, 80), torch.rand(3, 71, 66)]
    losses = model(images, _targets(images))
    assert {"loss_classifier", "loss_box_reg", "loss_semantic", "loss_direction", "loss_mask"} <= set(losses)
    sum(losses.values()).backward()
    assert (
        model.direction_head[-1].weight.grad.abs().sum() > 0 and model.refine[-1].weight.grad.abs().sum() > 0
    )
    # Direction pooling: the cells left of the box centre read the channel pointing right, and vice versa.
    bins = model.cell_bins
    assert bins[14, 0] != bins[14, -1] and bins[0, 14] != bins[-1, 14]
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert outputs[0]["masks"].shape[1:] == (1, 64, 80)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (counts as a list, column-major, starting with a run of zeros)."""
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def box_mask(height: int, width: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def write_coco_layout(root: Path) -> dict:
    """COCO's layout with two images: a polygon, a compressed RLE, an uncompressed RLE crowd region, and
    category ids 3 and 7 (contiguous labels 1 and 2)."""
    from PIL import Image

    (root / "val2017").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (50, 40), (90, 90, 90)).save(root / "val2017" / name)
    rle = mask_utils.encode(np.asfortranarray(box_mask(40, 50, 30, 20, 12, 10)))
    annotations = [
        {
            "id": 1,
            "image_id": 5,
            "category_id": 7,
            "bbox": [2, 3, 10, 10],
            "area": 100,
            "iscrowd": 0,
            "segmentation": [[2, 3, 12, 3, 12, 13, 2, 13]],
        },
        {
            "id": 2,
            "image_id": 5,
            "category_id": 3,
            "bbox": [30, 20, 12, 10],
            "area": 120,
            "iscrowd": 0,
            "segmentation": {"size": [40, 50], "counts": rle["counts"].decode()},
        },
        {
            "id": 3,
            "image_id": 9,
            "category_id": 3,
            "bbox": [0, 0, 20, 10],
            "area": 200,
            "iscrowd": 1,
            "segmentation": uncompressed_rle(box_mask(40, 50, 0, 0, 20, 10)),
        },
        {
            "id": 4,
            "image_id": 9,
            "category_id": 7,
            "bbox": [25, 15, 20, 20],
            "area": 400,
            "iscrowd": 0,
            "segmentation": [[25, 15, 45, 15, 45, 35, 25, 35]],
        },
    ]
    images = [
        {"id": 5, "file_name": "a.png", "height": 40, "width": 50},
        {"id": 9, "file_name": "b.png", "height": 40, "width": 50},
    ]
    path = root / "annotations" / "instances_val2017.json"
    return write_coco_json(path, {3: "cat", 7: "dog"}, images, annotations)


def test_coco_reader_decodes_polygons_and_rle_maps_categories_and_leaves_crowds_to_evaluation(tmp_path):
    write_coco_layout(tmp_path)
    dataset = CocoInstances(str(tmp_path), "val", classes=["cat", "dog"], category_ids=[3, 7])
    first, second = dataset[0], dataset[1]
    assert first["meta"] == {"image_id": 5, "name": "a", "size": (40, 50)}
    assert first["labels"].tolist() == [2, 1]  # dog (id 7) -> 2, cat (id 3) -> 1
    assert first["boxes"].tolist() == [[2, 3, 12, 13], [30, 20, 42, 30]]
    assert first["masks"].shape == (2, 40, 50) and first["masks"][1].sum() == 120
    assert first["masks"][0, 3:13, 2:12].float().mean() > 0.9  # the polygon, filled
    assert second["labels"].tolist() == [2]  # the crowd region is no training target...
    ground_truth = dataset.ground_truth()
    assert len(ground_truth.getAnnIds(imgIds=[9], iscrowd=None)) == 2  # ...but stays in the ground truth


def test_augmentation_moves_boxes_and_masks_together_and_drops_boxes_that_leave(tmp_path):
    import albumentations as A

    from segtrain.data.transforms import compose

    write_coco_layout(tmp_path)
    crop = compose(
        [A.Crop(x_min=0, y_min=0, x_max=25, y_max=40), A.HorizontalFlip(p=1.0)], seed=0, boxes=True
    )
    item = CocoInstances(str(tmp_path), "val", ["cat", "dog"], [3, 7], transform=crop)[0]
    assert item["image"].shape == (3, 40, 25)
    assert item["labels"].tolist() == [2]  # the cat at x 30-42 left the crop, its mask with it
    (x1, y1, x2, y2), mask = item["boxes"][0].tolist(), item["masks"][0].numpy()
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == pytest.approx((x1, y1, x2, y2), abs=1)


@pytest.fixture(scope="module")
def shapes_instances(tmp_path_factory) -> Path:
    return make_shapes_instances(tmp_path_factory.mktemp("shapes_instances"), {"train": 24, "val": 5})


@pytest.fixture(scope="module")
def trained(shapes_instances, tmp_path_factory) -> dict:
    """A tiny Mask R-CNN trained for a few epochs on drawn discs and squares."""
    cwd = tmp_path_factory.mktemp("instance_run")
    args = ["task=instance", "model=mask_rcnn", "data=instances_folder", f"data.root={shapes_instances}"]
    args += [*TINY_DETECTOR, "data.num_workers=0", "trainer.max_epochs=6", "callbacks.progress_bar=null"]
    result = run_cli(*args, "optimizer.lr=0.001", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt,) = checkpoints(cwd, "best.ckpt")
    return {"cwd": cwd, "ckpt": ckpt, "log": result.stdout + result.stderr, "root": shapes_instances}


def cocoeval_stats(ground_truth: Path, detections: list[dict], kind: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(ground_truth))
        evaluation = COCOeval(truth, truth.loadRes(detections), kind)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.slow
def test_training_reports_coco_ap_and_eval_equals_pycocotools(trained, tmp_path):
    assert "val box_AP" in trained["log"] and "best val mask_AP" in trained["log"]
    result = run_cli("eval", f"ckpt={trained['ckpt']}", "save_predictions=true", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    detections = json.loads(next(tmp_path.rglob("detections.json")).read_text())
    assert (
        metrics["detections"] == len(detections) > 0
        and metrics["mask_AP"] > 0.05
        and metrics["box_AP"] > 0.05
    )
    truth = trained["root"] / "annotations" / "val.json"
    for kind, prefix in (("bbox", "box"), ("segm", "mask")):
        stats = cocoeval_stats(truth, detections, kind)
        ours = [metrics[f"{prefix}_{name}"] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        assert ours == pytest.approx(list(stats[:6]), abs=1e-6)
    assert set(metrics["per_class"]) == {"disc", "square"}
    assert len(list(tmp_path.rglob("predictions/overlays/*.jpg"))) == 5
    assert next(tmp_path.rglob("per_class_ap.png")).stat().st_size > 0


@pytest.mark.slow
def test_validation_under_ddp_counts_every_image_once(shapes_instances, tmp_path):
    """Two gloo ranks validate 5 images (one rank gets 3): the gathered detections score as one process
    scores the checkpoint they were made with."""
    args = ["task=instance", "data=instances_folder", f"data.root={shapes_instances}", *TINY_DETECTOR]
    args += ["trainer=ddp_cpu", "trainer.devices=2", "trainer.max_epochs=1", "data.num_workers=0"]
    args += ["trainer.limit_train_batches=2"]
    result = run_cli(*args, "callbacks.progress_bar=null", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    during = json.loads(next(tmp_path.rglob("val_metrics.json")).read_text())
    (ckpt,) = checkpoints(tmp_path, "last.ckpt")
    result = run_cli("eval", f"ckpt={ckpt}", "data.split=val", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert during["images"] == after["images"] == 5 and during["detections"] == after["detections"]
    assert during["mask_AP"] == pytest.approx(after["mask_AP"], abs=1e-9)
    assert during["box_AP"] == pytest.approx(after["box_AP"], abs=1e-9)


@pytest.mark.slow
def test_export_onnx_and_torchscript_and_predict_with_all_three(trained, tmp_path):
    images = trained["root"] / "images" / "val"
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        args = ["export", f"ckpt={trained['ckpt']}", f"format={fmt}", f"output={tmp_path / name}"]
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "vs PyTorch at (1, 3, 161, 195)" in result.stdout  # the second check size
        if fmt == "onnx":  # the tracer's warnings are what the two-size check answers
            assert "Warning" not in result.stderr, result.stderr[-3000:]
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert (
        meta["task"] == "instance"
        and meta["category_ids"] == [1, 2]
        and meta["classes"] == ["disc", "square"]
    )
    runs = []
    for model in (trained["ckpt"], tmp_path / "model.onnx", tmp_path / "model.pt"):
        out = tmp_path / f"predicted_{Path(model).suffix[1:]}"
        result = run_cli("predict", f"ckpt={model}", f"input={images}", f"output={out}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(json.loads((out / "detections.json").read_text()))
        assert len(list((out / "overlays").glob("*.jpg"))) == 5

    # Float rounding may flip an NMS decision or the score threshold for a detection here and there: each
    # run finds all but at most 1% of the other's confident detections, at the same place and score.
    def key(d: dict) -> tuple:
        return d["image_id"], d["category_id"], *(round(v) for v in d["bbox"])

    reference, *exported = ({key(d): d["score"] for d in run if d["score"] > 0.3} for run in runs)
    for detections in exported:
        shared = reference.keys() & detections.keys()
        assert len(shared) >= 0.99 * max(len(reference), len(detections)) > 0
        assert [detections[k] for k in shared] == pytest.approx([reference[k] for k in shared], abs=1e-4)


@pytest.mark.slow
def test_export_of_a_model_with_no_detections(trained, tmp_path):
    """pytorch/vision#2251: the exported graph must run on an image where nothing is detected."""
    path = tmp_path / "empty.onnx"
    # The checkpoint's task (instance) is composed, its model's keys included: no + to add it.
    args = ["export", f"ckpt={trained['ckpt']}", "model.box_score_thresh=1.0", f"output={path}"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "outputs (0, 4), (0,), (0,), (0, 1, 161, 195)" in result.stdout


def test_check_data_finds_what_spoils_instance_training(tmp_path):
    data = write_coco_layout(tmp_path)
    data["annotations"] += [
        {
            "id": 10,
            "image_id": 5,
            "category_id": 3,
            "bbox": [5, 5, 0, 8],
            "iscrowd": 0,
            "segmentation": [[5, 5, 6, 5, 6, 13]],
        },
        {
            "id": 11,
            "image_id": 5,
            "category_id": 3,
            "bbox": [20, 10, 48, 38],
            "iscrowd": 0,
            "segmentation": [[20, 10, 48, 10, 48, 38, 20, 38]],
        },
        {
            "id": 12,
            "image_id": 5,
            "category_id": 99,
            "bbox": [1, 1, 5, 5],
            "iscrowd": 0,
            "segmentation": [[1, 1, 6, 1, 6, 6]],
        },
        {
            "id": 13,
            "image_id": 9,
            "category_id": 7,
            "bbox": [0, 20, 10, 10],
            "iscrowd": 0,
            "segmentation": [[30, 0, 40, 0, 40, 10, 30, 10]],
        },
    ]
    data["images"].append({"id": 12, "file_name": "gone.png", "height": 40, "width": 50})
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    args = ["check-data", "task=instance", "data=coco_instances", f"data.root={tmp_path}"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    out = result.stdout
    assert "zero or negative width or height" in out and "#1994" in out
    assert "look like x1, y1, x2, y2" in out and "write [x1, y1, x2 - x1, y2 - y1]" in out
    assert "categories that 'categories' does not list, e.g. (12, 99)" in out
    assert "masks lie away from their boxes" in out and "detectron2#428" in out
    assert "1 images listed are missing" in out and "gone.png" in out
    assert "have no annotations" in out  # gone.png has none
    assert out.count("  fix: ") == 5


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "the annotation file"),
        ("no_annotations", "has no 'annotations' list"),
        ("short_polygon", "has a polygon of 4 numbers; a polygon needs at least 3 x,y points"),
    ],
)
def test_bad_annotation_files_get_one_error_naming_the_file(case, message, tmp_path):
    data = write_coco_layout(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    if case == "missing":
        path.unlink()
    elif case == "no_annotations":
        path.write_text(json.dumps({"images": data["images"], "categories": data["categories"]}))
    else:
        data["annotations"][0]["segmentation"] = [[2, 3, 12, 3]]
        path.write_text(json.dumps(data))
    args = ["task=instance", "model=mask_rcnn", "data=coco_instances", f"data.root={tmp_path}"]
    result = run_cli(*args, "data.train_split=val", *TINY_DETECTOR, "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr


def spoil(data: dict, case: str) -> None:
    """One mistake of the kind that trains silently into wrong numbers, in write_coco_layout's json."""
    first = data["annotations"][0]
    if case == "xyxy":  # [2, 3, 10, 10] as x1, y1, x2, y2 of a box reaching past the 50 px image
        first["bbox"] = [30, 3, 48, 13]
    elif case == "unknown":
        first["category_id"] = 99
    elif case == "empty":
        first["segmentation"] = []
    else:  # the json says 50x40; the file on disk is another size
        from PIL import Image

        Image.new("RGB", (60, 40), (90, 90, 90)).save(Path(data["root"]) / "val2017" / "a.png")


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("xyxy", ["look like x1, y1, x2, y2", "write [x1, y1, x2 - x1, y2 - y1]", "annotation_check=warn"]),
        ("unknown", ["categories that 'categories' does not list, e.g. (1, 99)", "annotation_check=warn"]),
        ("empty", ["1 annotations have an empty mask", "annotation_check=warn"]),
        ("size", ["a.png is 60x40 pixels, but", "says 50x40", "fix the json's width and height"]),
    ],
)
def test_training_refuses_annotations_that_would_make_its_numbers_wrong(case, fragments, tmp_path):
    """check-data's json findings stop training before its first step, with the fix (the image size is
    checked where the image is read)."""
    data = write_coco_layout(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    spoil({**data, "root": str(tmp_path)}, case)
    path.write_text(json.dumps(data))
    args = ["task=instance", "model=mask_rcnn", "data=instances_folder", f"data.root={tmp_path}"]
    args += ['data.annotation_file="annotations/instances_{split}2017.json"', 'data.image_dir="{split}2017"']
    args += ["data.train_split=val", "data.num_workers=0", *TINY_DETECTOR, "trainer.max_epochs=1"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.count("error: ") == 1
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]
    assert not checkpoints(tmp_path)
    if case == "xyxy":  # one case is enough to show the key lets training go on
        allowed = run_cli(*args, "data.annotation_check=warn", "callbacks.progress_bar=null", cwd=tmp_path)
        assert allowed.returncode == 0, allowed.stderr[-2000:]
        assert "Training on without those annotations" in allowed.stderr + allowed.stdout


def test_an_unreadable_json_that_names_the_classes_is_one_plain_error(tmp_path):
    """data=instances_folder reads its classes from the json while the config resolves: the reader's own
    message comes out, without OmegaConf's interpolation wrapper."""
    path = tmp_path / "annotations" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe{not json")
    result = run_cli(
        "task=instance", "model=mask_rcnn", "data=instances_folder", f"data.root={tmp_path}", cwd=tmp_path
    )
    assert_clean_error(result, f"data.annotation_file: {path} is not a readable json file")
    assert "full_key" not in result.stderr and "object_type" not in result.stderr


@pytest.mark.slow
def test_an_instance_checkpoint_given_to_task_semantic_is_refused(trained, tmp_path):
    result = run_cli("eval", f"ckpt={trained['ckpt']}", "task=semantic", cwd=tmp_path)
    assert_clean_error(result, "is an instance segmentation checkpoint, but the command says task=semantic")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task=semantic", "model=mask_rcnn"], "is for task=instance, but this run's task is semantic. Pass"),
        # No task typed: the model's (instance) is taken, and then the semantic data does not fit it.
        (["model=mask_rcnn", "data=shapes"], "is for task=semantic, but this run's task is instance. Pass"),
    ],
)
def test_semantic_and_instance_configs_do_not_mix(overrides, message, tmp_path, monkeypatch, capsys):
    from segtrain.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(overrides)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_the_edges_of_the_unit_interval_pass(shapes_instances):
    from segtrain.config import compose
    from segtrain.validation import validate

    overrides = [f"data.root={shapes_instances}", "inference.score_threshold=0", "scheduler.warmup_ratio=1"]
    validate(compose("config", ["task=instance", *overrides]))


def test_the_task_is_the_models_where_none_is_typed(shapes_instances, tmp_path, capsys):
    """``segtrain model=mask_rcnn`` trains task=instance (its data default included) without task=."""
    from segtrain.cli import precheck

    overrides = ["model=mask_rcnn", f"data.root={shapes_instances}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert precheck("train", overrides, set()) == ["task=instance"]
    assert "is for task=instance: training task=instance" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mask_rcnn_v2", "panet", "masklab"])
def test_every_instance_model_trains_evaluates_predicts_and_exports(model, shapes_instances, tmp_path):
    args = ["task=instance", f"model={model}", "data=instances_folder", f"data.root={shapes_instances}"]
    tiny = [o for o in TINY_DETECTOR if model != "masklab" or not o.startswith("model.mask_channels")]
    if model == "masklab":
        tiny += ["model.head_channels=16", "model.refine_channels=16"]
    args += [*tiny, "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=3"]
    args += ["callbacks.progress_bar=null"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt,) = checkpoints(tmp_path, "last.ckpt")
    assert run_cli("eval", f"ckpt={ckpt}", cwd=tmp_path).returncode == 0
    onnx = tmp_path / "m.onnx"
    result = run_cli("export", f"ckpt={ckpt}", f"output={onnx}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    images, out = shapes_instances / "images" / "val", tmp_path / "p"
    result = run_cli("predict", f"ckpt={onnx}", f"input={images}", f"output={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_masklab_distance_bins_pair_each_direction_with_rings():
    """With 2 distance bins each direction has an inner and an outer channel: on the box grid, cells near
    the centre take the inner one and corner cells the outer; a pixel's bin comes from its direction and
    its distance relative to the instance's farthest pixel."""
    from segtrain.models.masklab import direction_distance_bins

    dy, dx = torch.tensor([0.0, 0.0, 3.0, -1.0]), torch.tensor([1.0, 4.0, 0.0, -1.0])
    # Directions (8 bins from -pi): 0 rad -> bin 4, pi/2 -> bin 6, -3pi/4 -> bin 1; distances / 4.
    assert direction_distance_bins(dy, dx, 4.0, 8, 2).tolist() == [4 * 2 + 0, 4 * 2 + 1, 6 * 2 + 1, 1 * 2 + 0]
    model = MaskLab(**TINY, distances=2, head_channels=16, refine_channels=16)
    assert model.direction_head[-1].out_channels == 16
    rings = model.cell_bins % 2
    assert rings[13:15, 13:15].eq(0).all() and rings[0, 0] == 1 and rings[-1, -1] == 1
    images = [torch.rand(3, 64, 80)]
    sum(model(images, _targets(images)).values()).backward()
    assert model.direction_head[-1].weight.grad.abs().sum() > 0


def fit_scene() -> tuple[torch.Tensor, dict]:
    """One 64x80 image: a bright disc (class 1) and a bright rectangle (class 2) on dark noise."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 64, 80, generator=generator) * 0.2
    rows, columns = torch.meshgrid(torch.arange(64), torch.arange(80), indexing="ij")
    masks = torch.stack(
        [
            ((rows - 20) ** 2 + (columns - 20) ** 2 <= 100),
            (rows >= 30) & (rows < 52) & (columns >= 45) & (columns < 70),
        ]
    )
    image[:2] += masks.float() * 0.8
    boxes = torch.tensor([[10.0, 10.0, 31.0, 31.0], [45.0, 30.0, 70.0, 52.0]])
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks.to(torch.uint8)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["panet", "masklab"])
def test_panet_and_masklab_learn_a_scene_they_can_fit(model, tmp_path):
    """50 Adam steps on one image: COCO box and mask AP (pycocotools) on it are clearly above zero."""
    from pycocotools import mask as mask_utils

    from segtrain.metrics import coco_results, coco_scores

    torch.manual_seed(0)
    network = (
        PANet(**TINY, mask_channels=32)
        if model == "panet"
        else MaskLab(**TINY, head_channels=16, refine_channels=16)
    )
    image, target = fit_scene()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(50):
        loss = sum(network([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        output = network.eval()([image])[0]
    annotations = []
    for index, (mask, label) in enumerate(zip(target["masks"].numpy(), target["labels"].tolist())):
        rle = mask_utils.encode(np.asfortranarray(mask))
        annotations.append({
            "id": index + 1, "image_id": 1, "category_id": label, "iscrowd": 0,
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
        })  # fmt: skip
    write_coco_json(tmp_path / "truth.json", SHAPES, [{"id": 1, "width": 80, "height": 64}], annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tmp_path / "truth.json"))
    results = coco_results(output, 1, [1, 2], 0.5)
    scores = coco_scores(truth, results, [1], list(SHAPES.values()), [1, 2])
    assert scores["box_AP"] > 0.2 and scores["mask_AP"] > 0.2, scores  # 0.55 and 0.65 (PANet), 0.375 and 0.57


@pytest.mark.skipif(not (SHARED_DATA / "isbi2012-membranes").is_dir(), reason="shared data absent")
def test_converter_on_isbi_cells_and_camvid_cars_and_pedestrians(tmp_path):
    from PIL import Image

    isbi = SHARED_DATA / "isbi2012-membranes"
    cells = convert(isbi / "image", isbi / "label", {255: "cell"}, tmp_path / "isbi.json")
    assert len(cells["images"]) == 30 and cells["categories"] == [{"id": 1, "name": "cell"}]
    assert 50 < len(cells["annotations"]) / 30 < 200  # each region of cell interior enclosed by membrane
    camvid = SHARED_DATA / "camvid"
    objects = convert(
        camvid / "val", camvid / "valannot", {8: "car", 9: "pedestrian"}, tmp_path / "cv.json", 20
    )
    names = {c["id"]: c["name"] for c in objects["categories"]}
    counts = {name: sum(a["category_id"] == i for a in objects["annotations"]) for i, name in names.items()}
    assert counts["car"] > 100 and counts["pedestrian"] > 50
    # Every instance decodes to pixels of its class, and its bbox is the box around them.
    first = objects["annotations"][0]
    image = next(i for i in objects["images"] if i["id"] == first["image_id"])
    label = np.array(Image.open(camvid / "valannot" / Path(image["file_name"]).name))
    mask = mask_utils.decode(first["segmentation"] | {"counts": first["segmentation"]["counts"].encode()})
    assert (label[mask.astype(bool)] == (8 if names[first["category_id"]] == "car" else 9)).all()
    ys, xs = np.nonzero(mask)
    assert first["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def test_instance_datamodule_batches_are_lists(shapes_instances):
    from omegaconf import OmegaConf

    reader = {
        "_target_": "segtrain.data.datasets.coco_instances.CocoInstances",
        "_partial_": True,
        "root": str(shapes_instances),
        "annotation_file": "annotations/{split}.json",
        "image_dir": "images/{split}",
    }
    data = {
        "category_ids": [1, 2],
        "dataset": reader,
        "classes": ["disc", "square"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],
        "batch_size": 3,
        "num_workers": 0,
    }
    module = InstanceDataModule.from_config(OmegaConf.create(data))
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert isinstance(batch["image"], list) and len(batch["image"]) == 3
    for masks, boxes, labels in zip(batch["masks"], batch["boxes"], batch["labels"]):
        assert masks.shape[0] == boxes.shape[0] == len(labels)


@pytest.mark.slow
def test_bench_times_an_instance_model_against_a_hand_written_loop(shapes_instances, tmp_path):
    args = [
        "bench",
        "task=instance",
        "data=instances_folder",
        f"data.root={shapes_instances}",
        *TINY_DETECTOR,
    ]
    result = run_cli(
        *args, "data.num_workers=0", "bench.steps=3", "bench.warmup=1", "bench.rounds=1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(next(tmp_path.rglob("bench.json")).read_text())
    assert bench["model"].endswith("MaskRCNN") and bench["steps_timed"] == 2 and bench["step_tflop"] > 0
    assert bench["plain_images_per_s"] > 0 and bench["segtrain_images_per_s"] > 0


def test_mask_rcnn_on_a_timm_trunk():
    torch.manual_seed(0)
    model = MaskRCNN(**{**TINY, "backbone": {**TINY["backbone"], "source": "timm"}}, mask_channels=32)
    images = [torch.rand(3, 64, 80)]
    losses = model(images, _targets(images))
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad is not None  # timm's stem, trained (trainable_layers=5)


@pytest.mark.slow
def test_eval_on_another_root_that_holds_only_the_val_split(trained, tmp_path):
    """The checkpoint keeps the classes it read from the training json: the evaluated tree needs none."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(trained["root"] / "images" / "val", elsewhere / "images" / "val")
    (elsewhere / "annotations").mkdir()
    shutil.copy(trained["root"] / "annotations" / "val.json", elsewhere / "annotations" / "val.json")
    result = run_cli("eval", f"ckpt={trained['ckpt']}", f"data.root={elsewhere}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(next(tmp_path.rglob("metrics.json")).read_text())["images"] == 5


def test_export_comparison_pairs_detections_and_forgives_only_ties_at_the_cut():
    """ONNX and PyTorch may keep different detections where scores tie at the cut (here 3 detections per
    image): those are left out and the rest compared in PyTorch's order. A detection one side kept above
    the other side's cut is a real difference: both come back whole, and the comparison sees it."""
    from segtrain.commands.export import compare
    from segtrain.tasks.instance.module import align_detections

    def detections(boxes, labels, scores):
        masks = torch.zeros(len(boxes), 1, 8, 8)
        return torch.tensor(boxes, dtype=torch.float), torch.tensor(labels), torch.tensor(scores), masks

    def difference(exported, reference, score_thresh=0.05):
        align = partial(align_detections, score_thresh=score_thresh, limit=3)
        return compare(lambda _: exported, lambda _: reference, [torch.zeros(1)], "onnx", align)

    reference = detections([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]], [1, 2, 1], [0.9, 0.8, 0.3])
    tied = detections([[2, 2, 6, 6], [0, 0, 4, 4], [5, 5, 7, 7]], [2, 1, 2], [0.8, 0.9, 0.30001])
    paired = align_detections(reference, tied, 0.05, 3)
    assert paired[0][0].tolist() == paired[1][0].tolist() == [[0, 0, 4, 4], [2, 2, 6, 6]]
    assert difference(tied, reference) < 1e-4
    # Under the cap, the cut is the score threshold: a detection only one side kept scores at it.
    at_threshold = detections([[2, 2, 6, 6], [0, 0, 4, 4]], [2, 1], [0.8, 0.9])
    assert difference(at_threshold, reference, score_thresh=0.29995) < 1e-4
    assert difference(at_threshold, reference) == math.inf

    above_the_cut = detections([[2, 2, 6, 6], [0, 0, 4, 4], [5, 5, 7, 7]], [2, 1, 2], [0.8, 0.9, 0.5])
    assert difference(above_the_cut, reference) > 0.1
    other_label = detections([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]], [2, 2, 1], [0.9, 0.8, 0.3])
    assert difference(other_label, reference) > 0.1
