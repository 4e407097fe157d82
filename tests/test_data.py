"""Readers and the bad-data cases: each gets one message that names the file."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from PIL import Image

from segtrain.config import config_groups
from segtrain.data.datamodule import SegDataModule
from segtrain.data.datasets.shapes import CLASSES, Shapes
from segtrain.data.datasets.voc import VOCSegmentation
from segtrain.errors import SegtrainError
from tests.conftest import make_voc_tree


def voc(root, split="train", **kwargs):
    return VOCSegmentation(root=root, split=split, num_classes=21, **kwargs)


def test_voc_reads_palette_masks_as_ids(voc_root):
    dataset = voc(voc_root)
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
    assert item["mask"].dtype == torch.uint8 and item["mask"].shape == item["image"].shape[1:]
    values = set(item["mask"].unique().tolist())
    assert 0 in values and 255 in values and values - {0, 255}
    assert len(voc(voc_root, "val")) == 4


def test_voc_sbd_aug_list(tmp_path):
    root = make_voc_tree(tmp_path, aug=True)
    dataset = voc(root, aug=True)
    assert all("SegmentationClassAug" in str(mask) for _, mask in dataset.samples)
    assert len(dataset[0]["mask"].shape) == 2
    assert all("SegmentationClass/" in str(mask) for _, mask in voc(root, "val", aug=True).samples)


def test_missing_root_split_file_and_empty_split(voc_root, tmp_path):
    with pytest.raises(
        SegtrainError, match=r"data.root=.*nowhere does not exist. Expected layout: .*JPEGImages"
    ):
        voc(tmp_path / "nowhere")
    with pytest.raises(SegtrainError, match=r"split list .*trainval.txt does not exist.*Expected layout"):
        voc(voc_root, "trainval")
    (voc_root / "ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(SegtrainError, match=r"split list .*val.txt is empty"):
        voc(voc_root, "val")


def _first_mask(root):
    name = (root / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    return root / "SegmentationClass" / f"{name}.png", root / "JPEGImages" / f"{name}.jpg"


def test_mask_size_mismatch_names_file_and_sizes(voc_root):
    mask_path, image_path = _first_mask(voc_root)
    w, h = Image.open(image_path).size
    Image.open(mask_path).resize((w + 3, h)).save(mask_path)
    with pytest.raises(
        SegtrainError, match=rf"mask {mask_path} is {h} x {w + 3} \(H x W\) but its image is {h} x {w}"
    ):
        voc(voc_root)[0]


def test_label_values_out_of_range_name_file_and_values(voc_root):
    mask_path, _ = _first_mask(voc_root)
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[0, 0], mask[0, 1] = 40, 33
    image = Image.fromarray(mask, mode="P")
    image.putpalette(Image.open(mask_path).getpalette())
    image.save(mask_path)
    with pytest.raises(
        SegtrainError, match=rf"mask {mask_path}: label values \[33, 40\] are >= num_classes=21"
    ):
        voc(voc_root)[0]


def test_binary_mask_suggests_label_map(voc_root):
    mask_path, _ = _first_mask(voc_root)
    mask = np.where(np.asarray(Image.open(mask_path)) > 0, 255, 0).astype(np.uint8)
    mask[0, 0] = 0
    Image.fromarray(mask, mode="L").save(mask_path)
    with pytest.raises(SegtrainError) as err:
        VOCSegmentation(root=voc_root, split="train", num_classes=2, ignore_index=254)[0]
    assert "label_map={255: 1}" in str(err.value)


def test_rgb_mask_where_ids_are_expected(voc_root):
    mask_path, _ = _first_mask(voc_root)
    Image.open(mask_path).convert("RGB").save(mask_path)
    with pytest.raises(
        SegtrainError, match=rf"mask {mask_path} is an RGB image, but single-channel class ids"
    ):
        voc(voc_root)[0]


def test_truncated_image_names_the_file(voc_root):
    _, image_path = _first_mask(voc_root)
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegtrainError, match=rf"cannot read image {image_path}: .*truncated"):
        voc(voc_root)[0]


def test_shapes_is_deterministic_and_not_trivial():
    first, again = Shapes("val", lengths={"val": 20}), Shapes("val", lengths={"val": 20})
    assert np.array_equal(first.images, again.images) and np.array_equal(first.masks, again.masks)
    assert not np.array_equal(first.images, Shapes("train", lengths={"train": 20}).images)
    counts = np.bincount(first.masks.ravel(), minlength=len(CLASSES))
    assert (counts > 0).all()
    # Background is the majority, but far from everything: a majority predictor scores ~1/6 mIoU.
    assert 0.6 < counts[0] / counts.sum() < 0.9


def test_datamodule_pads_validation_batches_with_ignore(voc_root):
    reader = {
        "_target_": "segtrain.data.datasets.voc.VOCSegmentation",
        "_partial_": True,
        "root": str(voc_root),
    }
    dm = SegDataModule.from_config(
        OmegaConf.create(
            {
                "dataset": reader,
                "classes": [str(i) for i in range(21)],
                "palette": [[0, 0, 0]] * 21,
                "batch_size": 2,
                "val_batch_size": 4,
                "num_workers": 0,
            }
        )
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[0] == 4 and batch["image"].dtype == torch.uint8
    sizes = [Image.open(p).size for p, _ in dm.datasets["val"].samples]
    assert batch["image"].shape[-2:] == (max(h for _, h in sizes), max(w for w, _ in sizes))
    w, h = sizes[0]
    assert (batch["mask"][0, h:, :] == 255).all() and (batch["mask"][0, :, w:] == 255).all()


def test_a_data_key_no_module_reads_is_refused_by_name():
    """The module takes its parts (description, splits, loading, pipelines, encoding) and a few options;
    a key it would not read (a typo, a key of another task's data) is one error naming it, not ignored."""
    from segtrain.config import compose

    cfg = compose("config", ["+data.batchsize=4"])
    with pytest.raises(SegtrainError, match=r"data\.batchsize is not a key data=shapes reads .* remove it"):
        SegDataModule.from_config(cfg.data)


@pytest.mark.parametrize("data", config_groups()["data"])
def test_every_shipped_data_config_holds_only_keys_its_module_reads(data):
    from hydra.utils import get_class

    from segtrain.config import compose

    cfg = compose("config", [f"data={data}"])
    unread = set(cfg.data) - {"_target_"} - get_class(cfg.data._target_).keys()
    assert not unread


class OwnDataModule(pl.LightningDataModule):
    """A user's own data module, named by data._target_."""

    def __init__(self, batch_size: int, score_resolution: str = "original"):
        super().__init__()
        self.batch_size, self.score_resolution = batch_size, score_resolution


def test_a_users_own_lightning_data_module_is_built_from_its_keys():
    from segtrain.data.datamodule import build_datamodule

    data = OmegaConf.create({"_target_": f"{__name__}.OwnDataModule", "batch_size": 3})
    module = build_datamodule(data, "transformed")
    assert isinstance(module, OwnDataModule) and (module.batch_size, module.score_resolution) == (
        3,
        "transformed",
    )
