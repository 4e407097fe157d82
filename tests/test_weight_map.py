"""The U-Net paper's weight map (Eq. 2) and the weighted cross-entropy that uses it."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from segtrain.config import compose
from segtrain.data.datamodule import build_datamodule
from segtrain.data.weight_map import unet_weight_map
from segtrain.errors import SegtrainError
from segtrain.losses import CrossEntropyLoss, DiceLoss
from tests.layouts import make_folder_tree


def two_cells() -> np.ndarray:
    """Two 14x14 cells separated by a 2-pixel gap of background (rows 19 and 20)."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:19, 5:19] = 1
    mask[21:35, 5:19] = 1
    return mask


def test_weight_map_follows_equation_2():
    mask = two_cells()
    weight = unet_weight_map(mask, w0=10, sigma=5)
    background_wc = mask.size / (2 * (mask == 0).sum())
    # A gap pixel (20, 12): 1 px from the lower cell and 2 px from the upper one.
    assert weight[20, 12] == pytest.approx(
        background_wc + 10 * math.exp(-((1 + 2) ** 2) / (2 * 5**2)), rel=1e-5
    )
    # Inside a cell: only the class-balancing term.
    assert weight[10, 10] == pytest.approx(mask.size / (2 * (mask == 1).sum()), rel=1e-6)
    # Far from both cells the border term has vanished.
    assert weight[39, 39] == pytest.approx(background_wc, abs=1e-3)


def test_single_object_has_no_border_term_and_ignore_weighs_nothing():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:10] = 1
    mask[0, :] = 255
    weight = unet_weight_map(mask)
    assert (weight[0] == 0).all() and len(np.unique(weight[1:])) == 2


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 255
    weights = torch.rand(2, 8, 8)
    expected = F.cross_entropy(logits, target, ignore_index=255, reduction="none") * weights
    valid = target != 255
    assert torch.allclose(CrossEntropyLoss()(logits, target, weights), expected[valid].sum() / valid.sum())
    with pytest.raises(SegtrainError, match="DiceLoss does not take per-pixel weights"):
        DiceLoss()(logits, target, weights)


def test_unet_weight_map_loss_option_feeds_weights_through_the_loader(tmp_path):
    root = make_folder_tree(tmp_path, count=6, values=(0, 1))
    cfg = compose(
        "config",
        [
            "data=folder",
            f"data.root={root}",
            "data.num_workers=0",
            "data.crop_size=[32,32]",
            "data.batch_size=2",
            "loss=unet_weight_map",
        ],
    )
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["weight"].shape == batch["mask"].shape and batch["weight"].dtype == torch.float32
    labelled = batch["mask"] != 255
    assert (batch["weight"][labelled] > 0).all() and (batch["weight"][~labelled] == 0).all()
    assert "weight" not in next(iter(datamodule.val_dataloader()))  # validation needs no weights
    loss = instantiate(cfg.loss)
    assert loss(torch.randn(2, 2, 32, 32), batch["mask"], batch["weight"]).isfinite()
