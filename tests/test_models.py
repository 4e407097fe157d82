"""The spine's four models: any input size, gradients, output strides, offline weights, export."""

import pytest
import timm
import torch

from segtrain.errors import SegtrainError
from segtrain.models.backbones import create_backbone
from segtrain.models.deeplab import DeepLabV3, DeepLabV3Plus
from segtrain.models.fcn import FCN
from segtrain.models.unet import UNet

TINY_BACKBONE = {"name": "resnet18", "multi_grid": None}

MODELS = {
    "fcn": lambda: FCN(5, backbone={"name": "resnet18"}),
    "deeplabv3": lambda: DeepLabV3(5, backbone={**TINY_BACKBONE, "output_stride": 8}, channels=32),
    "deeplabv3plus": lambda: DeepLabV3Plus(5, backbone=TINY_BACKBONE, channels=32),
    "unet_same": lambda: UNet(5, 3, base_channels=4, padding="same", batch_norm=True),
    "unet_valid": lambda: UNet(5, 3, base_channels=4, depth=2),
}


@pytest.mark.parametrize("name", MODELS)
def test_forward_odd_size_and_backward(name):
    model = MODELS[name]().train()
    x = torch.randn(2, 3, 97, 131)
    out = model(x)
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape == (2, 5, 97, 131)
    loss = (
        logits.mean() + sum(a.mean() for a in out.get("aux", [])) if isinstance(out, dict) else logits.mean()
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    assert torch.is_tensor(model(x[:1]))  # aux outputs only while training


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_output_stride(output_stride):
    backbone = create_backbone("resnet18", out_indices=(4,), output_stride=output_stride)
    (features,) = backbone(torch.randn(1, 3, 64, 96))
    assert features.shape[-2:] == (64 // output_stride, 96 // output_stride)


def test_multi_grid_sets_last_stage_dilations():
    backbone = create_backbone("resnet50", out_indices=(4,), output_stride=16, multi_grid=(1, 2, 4))
    assert [block.conv2.dilation[0] for block in backbone.layer4] == [2, 4, 8]


def test_offline_weights_file_is_loaded(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = DeepLabV3(3, backbone={**TINY_BACKBONE, "weights": str(path)})
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_missing_weights_file_names_the_key(tmp_path):
    with pytest.raises(SegtrainError, match="model.backbone.weights=.*does not exist"):
        create_backbone("resnet18", out_indices=(4,), weights=str(tmp_path / "nope.pth"))


def test_unet_paper_size_arithmetic_and_parameter_count():
    model = UNet(num_classes=2)
    # Ronneberger et al. 2015, Fig. 1: a 572x572 tile gives a 388x388 output map.
    assert model.border == 92 and model.output_size(572) == 388
    assert model.forward_tile(torch.zeros(1, 1, 572, 572)).shape[-2:] == (388, 388)
    # Paper architecture (23 conv layers, 2 classes): 31.03M parameters, as in its reference Caffe model.
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(31.03e6, rel=0.02)


def test_unet_valid_mode_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="must exceed 108"):
        UNet(2)(torch.zeros(1, 1, 100, 200))
