"""Scoring at each image's own resolution: where evaluation transforms put the image, how predictions
are mapped back, and predictions written in each dataset's published encoding."""

import json
import shutil
from pathlib import Path

import albumentations as A
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segtrain.config import compose as compose_config
from segtrain.data.datamodule import build_datamodule
from segtrain.data.datasets.base import pad_collate
from segtrain.data.io import read_mask
from segtrain.data.transforms import compose, transform_item
from segtrain.errors import SegtrainError
from segtrain.inference import predict_probs, to_original_size
from segtrain.metrics import ConfusionMatrix, scores
from tests.conftest import checkpoints, run_cli
from tests.layouts import make_ade20k_tree, make_cityscapes_tree, make_decathlon_tree, make_folder_tree


def blocks(h: int, w: int, classes: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, size=(-(-h // 8), -(-w // 8)), dtype=np.uint8)
    return np.kron(coarse, np.ones((8, 8), np.uint8))[:h, :w]


@pytest.mark.parametrize(
    "transforms, shape, region",
    [
        ([A.Resize(180, 240)], (180, 240), ((0, 180), (0, 240))),
        ([A.LongestMaxSize(200), A.PadIfNeeded(200, 200)], (200, 200), ((25, 175), (0, 200))),
        ([A.SmallestMaxSize(100)], (100, 133), ((0, 100), (0, 133))),
        ([A.PadIfNeeded(500, 500, position="top_left")], (500, 500), ((0, 360), (0, 480))),
        ([A.ColorJitter(p=1.0)], (360, 480), ((0, 360), (0, 480))),
    ],
)
def test_evaluation_transforms_report_where_the_image_lies(transforms, shape, region):
    mask = blocks(360, 480)
    image, kept, found = transform_item(
        compose(transforms, track_extent=True), np.zeros((360, 480, 3), np.uint8), mask, True
    )
    assert image.shape[:2] == shape and found == region
    assert kept is mask  # scored against the annotation as published


@pytest.mark.parametrize(
    "transform", [A.CenterCrop(100, 100), A.HorizontalFlip(p=1.0), A.Transpose(p=1.0), A.RandomCrop(64, 64)]
)
def test_transforms_that_lose_or_move_pixels_are_refused_with_the_way_out(transform):
    with pytest.raises(SegtrainError, match=r"data.val_transforms .*inference.score_resolution=transformed"):
        transform_item(compose([transform], track_extent=True), np.zeros((360, 480, 3), np.uint8), None, True)


def one_hot(mask: np.ndarray, classes: int = 4) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(mask).long(), classes).movedim(-1, 0).float()


@pytest.mark.parametrize(
    "transforms",
    [
        [A.Resize(24, 40)],
        [A.LongestMaxSize(40), A.PadIfNeeded(48, 48)],
        [A.Resize(90, 120), A.PadIfNeeded(96, 128, position="random")],
    ],
)
def test_mapping_back_undoes_resizes_and_pads_in_a_padded_batch(transforms):
    """Two images of other sizes in one padded batch: each prediction, made at the transformed size,
    comes back on its own grid and agrees with its annotation inside the label blocks."""
    pipeline = compose(transforms, seed=0, track_extent=True)
    items = []
    for size, seed in (((37, 50), 0), ((45, 33), 1)):
        mask = blocks(*size, seed=seed)
        # A perfect "model": the annotation carried through the same geometry as the image.
        image, _, region = transform_item(pipeline, np.repeat(mask[..., None], 3, -1), mask, True)
        items.append(
            {
                "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "mask": torch.from_numpy(mask),
                "meta": {"size": size, "region": region},
            }
        )
    batch = pad_collate(items)
    assert batch["mask"].shape == (2, 45, 50)
    probs = torch.stack([one_hot(image[0].numpy()) for image in batch["image"]])
    preds = to_original_size(probs, batch["meta"]).argmax(1)
    assert preds.shape == (2, 45, 50)
    for pred, item in zip(preds, items):
        h, w = item["meta"]["size"]
        mask = item["mask"].numpy()
        agree = pred[:h, :w].numpy() == mask
        # Only pixels next to a block edge may move by one when the image was resized.
        assert agree.mean() > 0.9
        interior = np.ones_like(agree)
        for axis in (0, 1):
            interior &= np.roll(mask, 1, axis) == mask
            interior &= np.roll(mask, -1, axis) == mask
        assert agree[interior].all()


def test_mapping_back_is_the_identity_without_geometric_transforms():
    probs = torch.rand(2, 3, 20, 30)
    metas = [
        {"size": (20, 30), "region": ((0, 20), (0, 30))},
        {"size": (12, 30), "region": ((0, 12), (0, 30))},
    ]
    assert torch.equal(to_original_size(probs, metas), probs)


def test_tta_and_sliding_windows_run_before_the_mapping_back():
    """Every inference mode works at the transformed size; the result maps back to the image's size."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1).eval()
    pipeline = compose([A.Resize(24, 36)], track_extent=True)
    image, _, region = transform_item(pipeline, np.zeros((50, 70, 3), np.uint8), None, True)
    x = torch.randn(1, 3, *image.shape[:2])
    with torch.no_grad():
        for options in ({}, {"flip": True, "scales": (0.75, 1.0)}, {"mode": "slide", "crop_size": (16, 16)}):
            probs = predict_probs(model, x, **options)
            restored = to_original_size(probs, [{"size": (50, 70), "region": region}])
            assert restored.shape == (1, 4, 50, 70)
            assert torch.allclose(restored.sum(1), torch.ones(1, 50, 70), atol=1e-4)


def datamodule(data: str, root, *overrides: str):
    cfg = compose_config("config", [f"data={data}", f"data.root={root}", "data.num_workers=0", *overrides])
    return build_datamodule(cfg.data, cfg.inference.score_resolution)


RESIZE = (
    "data.val_transforms=[{_target_: albumentations.Resize, height: 20, width: 28, interpolation: 1, "
    "mask_interpolation: 0}]"
)


def test_evaluation_items_keep_the_annotation_unless_told_otherwise(tmp_path):
    root = make_ade20k_tree(tmp_path / "ade", size=(40, 48))
    dm = datamodule("ade20k", root, RESIZE)
    dm.setup("validate")
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, 20, 28) and item["mask"].shape == (40, 48)
    assert item["meta"]["size"] == (40, 48) and item["meta"]["region"] == ((0, 20), (0, 28))
    dm = datamodule("ade20k", root, RESIZE, "inference.score_resolution=transformed")
    dm.setup("validate")
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, 20, 28) and item["mask"].shape == (20, 28)
    assert item["meta"]["region"] == ((0, 20), (0, 28))
    dm.setup("fit")  # training items are always transformed together with their masks
    assert dm.datasets["train"].original_mask is False


def written_and_read_back(dm, split: str, tmp_path):
    """Each item's annotation written as a prediction, then read back through the dataset's reader."""
    dataset = dm.build(split)
    for index in range(len(dataset)):
        item = dataset[index]
        path = dataset.save_prediction(item["mask"].numpy(), item["meta"], tmp_path, dm.palette)
        _, raw, _ = dataset.read_raw(index)
        yield item, path, raw


@pytest.mark.parametrize(
    "data, make",
    [
        ("ade20k", lambda root: make_ade20k_tree(root, size=(40, 48))),
        ("cityscapes", lambda root: make_cityscapes_tree(root, size=(32, 64))),
    ],
)
def test_predictions_are_written_in_the_published_ids(data, make, tmp_path):
    dm = datamodule(data, make(tmp_path / data), RESIZE)
    out = tmp_path / "predictions"
    out.mkdir()
    for item, path, raw in written_and_read_back(dm, "eval", out):
        stored = np.asarray(Image.open(path))
        labelled = item["mask"].numpy() != 255
        assert stored.shape == raw.shape and Image.open(path).mode == "L"
        assert np.array_equal(stored[labelled], raw[labelled])
        if data == "ade20k":  # shifted back: class 0 is stored as 1, "other" (0) is never predicted
            assert stored.min() >= 1


def test_voc_predictions_are_palette_pngs(tmp_path):
    from tests.conftest import make_voc_tree

    dm = datamodule("voc", make_voc_tree(tmp_path), RESIZE)
    out = tmp_path / "predictions"
    out.mkdir()
    for item, path, raw in written_and_read_back(dm, "eval", out):
        with Image.open(path) as png:
            assert png.mode == "P" and png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            assert np.array_equal(np.asarray(png), raw)


def test_colour_coded_predictions_are_written_in_colour(tmp_path):
    root = make_folder_tree(tmp_path / "folder", count=4, values=(0, 1, 2))
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for mask_path in (root / "masks").iterdir():
        Image.fromarray(np.asarray(palette, np.uint8)[np.asarray(Image.open(mask_path))]).save(mask_path)
    dm = datamodule(
        "folder",
        root,
        "data.color_map=palette",
        "data.classes=[a,b,c]",
        f"data.palette={palette}".replace(" ", ""),
        "data.split=all",
        RESIZE,
    )
    out = tmp_path / "predictions"
    out.mkdir()
    for item, path, raw in written_and_read_back(dm, "eval", out):
        stored = np.asarray(Image.open(path).convert("RGB"))
        assert stored.shape == raw.shape
        assert np.array_equal(dm.encoding(stored), item["mask"].numpy())


def test_volumes_are_scored_and_written_on_the_label_grid(tmp_path):
    root = make_decathlon_tree(tmp_path / "Task09_Tiny", cases=5, shape=(20, 16, 12))
    pad = "data.val_transforms=[{_target_: albumentations.PadIfNeeded3D, min_zyx: [16, 24, 24], fill: 0}]"
    dm = datamodule("decathlon", root, pad)
    dataset = dm.build("eval")
    item = dataset[0]
    assert item["image"].shape == (1, 16, 24, 24) and item["mask"].shape == (12, 16, 20)
    (start_z, stop_z), (start_y, stop_y), (start_x, stop_x) = item["meta"]["region"]
    assert (stop_z - start_z, stop_y - start_y, stop_x - start_x) == (12, 16, 20)
    probs = one_hot(np.zeros((16, 24, 24), np.uint8), 2)
    probs[:, start_z:stop_z, start_y:stop_y, start_x:stop_x] = one_hot(item["mask"].numpy(), 2)
    pred = to_original_size(probs[None], [item["meta"]]).argmax(1)[0]
    assert torch.equal(pred, item["mask"].long())
    path = dataset.save_prediction(pred.numpy().astype(np.uint8), item["meta"], tmp_path, dm.palette)
    written, label = nib.load(path), nib.load(item["meta"]["mask_path"])
    assert written.shape == label.shape and np.allclose(written.affine, label.affine)
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(label.dataobj))


KEEP_RATIO_AND_PAD = (
    "data.val_transforms=[{_target_: albumentations.LongestMaxSize, max_size: 32}, "
    "{_target_: albumentations.PadIfNeeded, min_height: 32, min_width: 32, border_mode: 0, fill: 0}]"
)


def train_tiny(cwd, data: str, root, *overrides: str):
    common = [f"data={data}", f"data.root={root}", "data.num_workers=0"]
    result = run_cli(
        "train",
        *common,
        *overrides,
        "model.base_channels=4",
        "model.depth=2",
        "data.crop_size=[32,32]",
        "data.batch_size=2",
        "data.val_batch_size=3",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = checkpoints(cwd / "outputs", "best.ckpt")
    return best, common


def evaluate_and_rescore(cwd, best, common, *overrides: str) -> tuple[dict, dict, Path]:
    """segtrain's metrics, and the same metrics recomputed from the written files read back through the
    dataset's reader, against the annotations as published; and where the predictions are."""
    result = run_cli("eval", f"ckpt={best}", *common, "save_predictions=true", *overrides, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = max((cwd / "outputs" / "eval").rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    ours = json.loads(metrics.read_text())
    cfg = compose_config("config", [*common, *overrides])
    dm = build_datamodule(cfg.data)
    dataset = dm.build("eval")
    confmat = ConfusionMatrix(dm.num_classes)
    for index, (image_path, mask_path) in enumerate(dataset.samples):
        written = metrics.parent / "predictions" / f"{image_path.stem}.png"
        truth = dm.encoding(dataset.read_raw(index)[1])
        pred = dm.encoding(read_mask(written, palette_ok=dataset.palette_masks))
        assert pred.shape == truth.shape == np.asarray(Image.open(image_path)).shape[:2]
        assert (pred != 255).all()
        confmat.update(torch.from_numpy(pred), torch.from_numpy(truth))
    return ours, scores(confmat.compute(), list(ours["per_class"])), metrics.parent / "predictions"


@pytest.mark.slow
def test_voc_scored_on_palette_pngs_at_each_size_with_every_inference_mode(tmp_path):
    from tests.conftest import make_voc_tree

    root = make_voc_tree(tmp_path / "data")  # images of 40-72 px, each its own size
    best, common = train_tiny(tmp_path, "voc", root, KEEP_RATIO_AND_PAD)
    slide_and_tta = ["inference.mode=slide", "inference.crop_size=[16,16]", "inference.flip=true"]
    for inference in ([*slide_and_tta, "inference.scales=[0.75,1.0]"], ["inference.crf=true"], []):
        ours, recomputed, predictions = evaluate_and_rescore(tmp_path, best, common, *inference)
        assert ours["pixels"] == recomputed["pixels"] > 0
        assert abs(ours["mIoU"] - recomputed["mIoU"]) <= 1e-9, inference

    # predict runs the same evaluation transforms, from the checkpoint and from its ONNX export.
    images = tmp_path / "images"
    images.mkdir()
    for written in predictions.iterdir():
        shutil.copy(root / "JPEGImages" / f"{written.stem}.jpg", images)
    onnx_path = tmp_path / "model.onnx"
    exported = run_cli("export", f"ckpt={best}", f"output={onnx_path}", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    recorded = json.loads(onnx_path.with_name("model.onnx.json").read_text())["val_transforms"]
    assert recorded[1]["min_height"] == 32
    for source in (best, onnx_path):
        out = tmp_path / f"predict_{source.suffix[1:]}"
        result = run_cli("predict", f"ckpt={source}", f"input={images}", f"output={out}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        for written in predictions.iterdir():
            by_eval = np.asarray(Image.open(written))
            by_predict = np.asarray(Image.open(out / written.name))
            assert by_predict.shape == by_eval.shape
            # Batched and single-image convolutions round differently, which flips near-ties.
            assert (by_predict == by_eval).mean() > 0.99


@pytest.mark.slow
def test_ade20k_scored_on_its_shifted_ids(tmp_path):
    root = make_ade20k_tree(tmp_path / "ade", per_split=3, size=(40, 56))
    best, common = train_tiny(tmp_path, "ade20k", root, RESIZE)
    ours, recomputed, _ = evaluate_and_rescore(tmp_path, best, common)
    assert ours["pixels"] == recomputed["pixels"] > 0
    assert abs(ours["mIoU"] - recomputed["mIoU"]) <= 1e-9
