"""Each reader on a tiny tree in its published layout, the label encodings, and the real data."""

import numpy as np
import pytest
import torch
from PIL import Image

from segtrain.config import compose
from segtrain.data.datamodule import build_datamodule
from segtrain.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from segtrain.data.datasets.coco_stuff import STUFFTHINGMAP_TO_TRAIN_ID
from segtrain.data.encoding import LabelEncoding
from segtrain.errors import SegtrainError
from tests.conftest import SHARED_DATA
from tests.layouts import (
    make_ade20k_tree,
    make_camvid_tree,
    make_cityscapes_tree,
    make_coco_stuff_tree,
    make_decathlon_tree,
    make_folder_tree,
    save,
)


def datamodule(data: str, root, *overrides: str):
    cfg = compose("config", [f"data={data}", f"data.root={root}", "data.num_workers=0", *overrides])
    return build_datamodule(cfg.data)


def read_pairs(dm, split: str):
    """(stored mask, item mask) for every sample of a split, read without augmentation."""
    dataset = dm.reader(split)
    return dataset, [
        (np.asarray(Image.open(mask)), dataset[i]["mask"].numpy())
        for i, (_, mask) in enumerate(dataset.samples)
    ]


def test_cityscapes_maps_34_label_ids_to_19_train_ids(tmp_path):
    dm = datamodule("cityscapes", make_cityscapes_tree(tmp_path))
    dataset, pairs = read_pairs(dm, "train")
    assert len(dataset) == 2 and dm.num_classes == 19
    for stored, mask in pairs:
        expected = np.vectorize(lambda v: LABEL_ID_TO_TRAIN_ID.get(int(v), 255))(stored)
        assert np.array_equal(mask, expected)
        assert set(np.unique(mask).tolist()) <= set(range(19)) | {255}
    assert np.array_equal(dm.encoding.inverse(mask)[mask != 255], stored[mask != 255])


def test_cityscapes_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = {
        label.id: label.trainId for label in labels.labels if 0 <= label.trainId < 255 and label.id >= 0
    }
    assert LABEL_ID_TO_TRAIN_ID == official


def test_ade20k_reduces_the_zero_label(tmp_path):
    dm = datamodule("ade20k", make_ade20k_tree(tmp_path))
    dataset, pairs = read_pairs(dm, "val")
    assert len(dataset) == 2 and dm.num_classes == 150
    for stored, mask in pairs:
        assert np.array_equal(mask, np.where(stored == 0, 255, stored.astype(int) - 1))


def test_camvid_resolves_the_authors_absolute_paths_and_ignores_void(tmp_path):
    root = make_camvid_tree(tmp_path / "CamVid")
    dm = datamodule("camvid", root)
    for split in ("train", "val", "test"):
        dataset, pairs = read_pairs(dm, split)
        assert [image.parent for image, _ in dataset.samples] == [root / split] * 2
        for stored, mask in pairs:
            assert np.array_equal(mask, np.where(stored == 11, 255, stored))
    (root / "val.txt").write_text("/SegNet/elsewhere/x.png /SegNet/elsewhere/y.png\n")
    with pytest.raises(
        SegtrainError, match=r"val.txt: no tail of its first entry /SegNet/elsewhere/x.png exists"
    ):
        read_pairs(dm, "val")


def test_coco_stuff_maps_182_ids_to_171_classes(tmp_path):
    dm = datamodule("coco_stuff", make_coco_stuff_tree(tmp_path))
    assert dm.num_classes == 171 and len(STUFFTHINGMAP_TO_TRAIN_ID) == 171
    _, pairs = read_pairs(dm, "train")
    for stored, mask in pairs:
        # 0 = person -> 0; 11 = unused thing id 12 -> ignored; 91 = banner (id 92) -> 80; 181 = wood -> 170
        expected = {0: 0, 11: 255, 91: 80, 181: 170, 255: 255}
        assert np.array_equal(mask, np.vectorize(expected.get)(stored))


def test_folder_label_map_split_lists_subdirs_and_holdout(tmp_path):
    root = make_folder_tree(tmp_path / "plain", count=10)
    dm = datamodule("folder", root, "data.label_map={255:1}")
    train, pairs = read_pairs(dm, "train")
    val, _ = read_pairs(dm, "val")
    assert len(train) == 8 and len(val) == 2
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    for stored, mask in pairs:
        assert np.array_equal(mask, (stored == 255).astype(np.uint8))

    (root / "val.txt").write_text("img_003\nimg_004.png\n")
    assert [p.stem for p, _ in read_pairs(dm, "val")[0].samples] == ["img_003", "img_004"]

    split_root = tmp_path / "subdirs"
    make_folder_tree(split_root, count=3, images_dir="images/train", masks_dir="masks/train")
    assert len(read_pairs(datamodule("folder", split_root, "data.label_map={255:1}"), "train")[0]) == 3

    (root / "images" / "stray.png").write_bytes((root / "images" / "img_000.png").read_bytes())
    (root / "masks" / "orphan.png").write_bytes((root / "masks" / "img_000.png").read_bytes())
    dataset, _ = read_pairs(dm, "all")
    assert len(dataset) == 10 and sorted(p.name for p in dataset.unpaired) == ["orphan.png", "stray.png"]
    with pytest.raises(SegtrainError, match=r"split 'test' has no list .*test.txt"):
        read_pairs(dm, "test")


def test_color_masks_map_through_the_palette(tmp_path):
    root = make_folder_tree(tmp_path, count=2, values=(0, 1, 2))
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for mask_path in (root / "masks").iterdir():
        ids = np.asarray(Image.open(mask_path))
        save(np.asarray(palette, np.uint8)[ids], mask_path)
    overrides = ["data.classes=[a,b,c]", f"data.palette={palette}".replace(" ", "")]
    with pytest.raises(SegtrainError, match="is an RGB image.*data.color_map=palette"):
        read_pairs(datamodule("folder", root, *overrides), "all")
    _, pairs = read_pairs(datamodule("folder", root, *overrides, "data.color_map=palette"), "all")
    by_list = datamodule("folder", root, *overrides, "data.color_map=[[0,0,0],[255,0,0],[0,0,255]]")
    by_dict = LabelEncoding(color_map={"255,0,0": 1, "#0000ff": 2, "0, 0, 0": 0})
    for (stored, mask), (_, mask_from_list) in zip(pairs, read_pairs(by_list, "all")[1]):
        ids = np.select([(stored == c).all(-1) for c in palette], [0, 1, 2], 255)
        assert np.array_equal(mask, ids) and np.array_equal(mask_from_list, ids)
        assert np.array_equal(by_dict(stored), ids)
    assert by_dict(np.array([[[1, 2, 3]]], np.uint8))[0, 0] == 255  # unlisted colours are ignored


def test_label_encoding_rejects_unknown_names_and_out_of_range_entries():
    with pytest.raises(
        SegtrainError, match="data.label_map=kitti is not a known label map; use one of cityscapes"
    ):
        LabelEncoding(label_map="kitti")
    with pytest.raises(SegtrainError, match="data.label_map entry 300: 1 is outside 0..255"):
        LabelEncoding(label_map={300: 1})


def test_decathlon_volumes_folds_and_3d_patches(tmp_path):
    root = make_decathlon_tree(tmp_path / "Task09_Tiny", cases=5, shape=(20, 16, 12))
    dm = datamodule("decathlon", root, "data.crop_size=[8,8,8]", "data.batch_size=2")
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 4 and len(val) == 1
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    image, mask, _ = val.load(0)
    assert image.shape == (12, 16, 20, 1) and image.dtype == np.float32 and mask.shape == (12, 16, 20)
    assert abs(float(image.mean())) < 0.1 and abs(float(image.std()) - 1) < 0.1  # CT: clipped, standardised
    assert mask[2:8, 3:10, 4:12].all() and mask.sum() == 6 * 7 * 8  # x, y, z reversed to z, y, x
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 8, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 8, 8, 8)
    val_batch = next(iter(dm.val_dataloader()))
    assert val_batch["image"].shape == (1, 1, 12, 16, 20)


def test_decathlon_missing_manifest(tmp_path):
    with pytest.raises(
        SegtrainError, match=r"dataset.json does not exist. Expected layout: dataset.json, imagesTr"
    ):
        read_pairs(datamodule("decathlon", tmp_path), "train")


def test_first_training_batches_catch_binary_masks(tmp_path):
    dm = datamodule("folder", make_folder_tree(tmp_path), "data.label_check_batches=2")
    dm.check_first_labels(torch.zeros(2, 8, 8, dtype=torch.uint8))
    with pytest.raises(
        SegtrainError,
        match=r"the first training batches: the masks hold only 0 and 255.*"
        r"Fix: data.label_map=\{255: 1\}",
    ):
        dm.check_first_labels(torch.full((2, 8, 8), 255, dtype=torch.uint8))


def test_binary_mask_check_runs_on_the_batches_that_run(tmp_path):
    """``trainer.limit_train_batches=2`` with 20 batches to check: the check decides after those 2."""
    dm = datamodule("folder", make_folder_tree(tmp_path))
    assert dm.label_check_batches == 20
    dm.check_first_labels(torch.zeros(2, 8, 8, dtype=torch.uint8), batches_in_epoch=2)
    with pytest.raises(SegtrainError, match="the masks hold only 0 and 255"):
        dm.check_first_labels(torch.full((2, 8, 8), 255, dtype=torch.uint8), batches_in_epoch=2)


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


@needs_shared
def test_real_camvid_reads_through_its_reader():
    dm = datamodule("camvid", SHARED_DATA / "camvid")
    for split, count in (("train", 367), ("val", 101)):
        dataset = dm.reader(split)
        assert dm.num_classes == 11 and len(dataset) == count
        for index in (0, count - 1):
            item = dataset[index]
            assert item["image"].shape == (3, 360, 480) and item["mask"].shape == (360, 480)
            assert set(item["mask"].unique().tolist()) <= set(range(11)) | {255}


@needs_shared
def test_real_isbi_membranes_read_as_binary_ids():
    dm = datamodule("isbi2012", SHARED_DATA / "isbi2012-membranes")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 24 and len(dm.datasets["val"]) == 6
    image, mask, _ = dm.datasets["val"].load(0)
    assert image.shape == (512, 512, 1) and set(np.unique(mask).tolist()) == {0, 1}
    assert 0.6 < mask.mean() < 0.9  # cell interior dominates, membranes are thin


@pytest.mark.parametrize("dataset", ["shapes", "shapes_referring"])
def test_lengths_that_are_no_mapping_get_the_spelling_that_passes(dataset):
    """``data.dataset.lengths=train:32`` (or ``{train:32}`` whose braces the shell ate) reaches the dataset
    as a string; it was a ValueError traceback from dict()."""
    from segtrain.data.datasets.shapes import Shapes
    from segtrain.data.datasets.shapes_referring import ShapesReferring

    cls = Shapes if dataset == "shapes" else ShapesReferring
    with pytest.raises(
        SegtrainError, match=r"data.dataset.lengths='train:32' must map each split .*\{train:32"
    ):
        cls("train", lengths="train:32")
    assert len(cls("train", lengths={"train": 3})) == 3
