"""Model zoo I: every model at odd sizes, with gradients, exported (ONNX at two sizes, TorchScript),
and at its paper configuration with the paper's parameter count."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate

from segtrain.commands.export import export_onnx, onnx_runner, write_and_compare
from segtrain.config import compose, config_groups, config_task
from segtrain.errors import SegtrainError
from segtrain.models.blocks import adaptive_avg_pool2d, max_unpool2d
from segtrain.models.deconvnet import DeconvNet
from segtrain.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus
from segtrain.models.fcn import FCN, FCNVGG
from segtrain.models.fpn import SemanticFPN
from segtrain.models.parsenet import ParseNet
from segtrain.models.pspnet import PSPNet
from segtrain.models.segnet import SegNet
from segtrain.models.unet import UNet
from segtrain.models.vnet import VNet
from segtrain.tasks.base import ExportSpec

# Tiny widths: a VGG16 at 1/8 of its channels, ResNet-18 for the ResNet models.
VGG = {"width": 0.125}
RESNET = {"name": "resnet18"}
ZOO = {
    "fcn32s": lambda: FCNVGG(5, variant="32s", width=64, backbone=VGG),
    "fcn16s": lambda: FCNVGG(5, variant="16s", width=64, backbone=VGG),
    "fcn8s": lambda: FCNVGG(5, variant="8s", width=64, backbone=VGG),
    "parsenet": lambda: ParseNet(5, fc_channels=32, backbone=VGG),
    "deeplabv1": lambda: DeepLabV1(5, fc_channels=32, backbone=VGG),
    "deeplabv2": lambda: DeepLabV2(5, backbone=RESNET),
    "deeplabv2_vgg_msc": lambda: DeepLabV2(
        5, backbone={"name": "vgg16", **VGG}, fc_channels=32, scales=(1.0, 0.75, 0.5)
    ),
    "segnet": lambda: SegNet(5, backbone=VGG),
    "deconvnet": lambda: DeconvNet(5, width=64, backbone=VGG),
    "pspnet": lambda: PSPNet(5, backbone=RESNET, channels=32),
    "fpn": lambda: SemanticFPN(5, backbone=RESNET, fpn_channels=32, head_channels=32),
    # The spine's models, exported the same way.
    "fcn_resnet": lambda: FCN(5, backbone=RESNET),
    "deeplabv3": lambda: DeepLabV3(5, backbone={**RESNET, "multi_grid": None}, channels=32),
    "deeplabv3plus": lambda: DeepLabV3Plus(5, backbone={**RESNET, "multi_grid": None}, channels=32),
    "unet_same": lambda: UNet(5, 3, base_channels=4, padding="same", batch_norm=True),
    "unet_valid": lambda: UNet(5, 3, base_channels=4, depth=2),
}
# DeconvNet's unpadded 7x7 fc6 needs inputs of at least 193 px, and the paper's U-Net (valid
# convolutions) more than 108 px (their size rules, tested below and in test_models.py).
SIZES = {"deconvnet": [(197, 229), (225, 259)], "unet_valid": [(113, 131), (129, 150)]}
ODD_SIZES = [(97, 131), (64, 83)]


def logits_of(out):
    return out["out"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", ZOO)
def test_forward_at_odd_sizes_and_backward(name):
    torch.manual_seed(0)
    model = ZOO[name]().train()
    height, width = SIZES.get(name, ODD_SIZES)[0]
    out = model(torch.randn(2, 3, height, width))
    assert logits_of(out).shape == (2, 5, height, width)
    loss = logits_of(out).square().mean() + sum(
        a.square().mean() for a in (out.get("aux", []) if isinstance(out, dict) else [])
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the loss"
    # The stem's gradient is non-zero: the loss reaches the input end. (timm zero-initialises the
    # last BN of each residual block, so some branch weights start with zero gradient.)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("name", ZOO)
def test_onnx_with_dynamic_size_and_torchscript(name, tmp_path):
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    sizes = SIZES.get(name, ODD_SIZES)
    samples = [torch.randn(1, 3, *size) for size in sizes]
    with torch.no_grad():
        export_onnx(model, samples[0], tmp_path / "model.onnx", opset=17)
        run = onnx_runner(tmp_path / "model.onnx")
        traced = torch.jit.trace(model, samples[0], check_trace=False)
        for sample in samples:
            expected = model(sample)
            scale = expected.abs().max().item() + 1e-6
            assert (run(sample) - expected).abs().max().item() / scale < 1e-4
            assert (traced(sample) - expected).abs().max().item() / scale < 1e-4


class ValueDependent(torch.nn.Module):
    """A branch on a tensor's value: the TorchScript-based exporter traces the branch taken, torch.export
    refuses it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        if x.abs().sum() >= 0:
            return self.conv(x)
        return -self.conv(x)


@pytest.mark.parametrize(
    "model, exporter",
    [(lambda: torch.nn.Conv2d(3, 2, 3, padding=1), "torch.export"), (ValueDependent, "torchscript")],
)
def test_onnx_export_prefers_torch_export_and_falls_back(model, exporter, tmp_path, capsys):
    samples = [torch.randn(1, 3, 32, 32), torch.randn(2, 3, 45, 61)]
    spec = ExportSpec(model().eval(), samples)
    worst, used = write_and_compare(spec, tmp_path / "m.onnx", "onnx", 18, 1e-4)
    assert used == exporter and worst < 1e-4
    fell_back = "the torch.export ONNX exporter does not fit this model" in capsys.readouterr().out
    assert fell_back == (exporter == "torchscript")


# Parameter counts of the papers' configurations, built on the meta device (no memory, no time).
PAPER_COUNTS = {
    # FCN-8s, VGG16, 21 classes: the FCN release's VGG16-FCN8s (Long et al. 2015, Table 1: ~134M).
    "fcn8s": (lambda: FCNVGG(21, variant="8s"), 134.0e6),
    # SegNet, VGG16-BN encoder + mirrored decoder: "29.5M" (Badrinarayanan et al. 2017, Table 6).
    "segnet": (lambda: SegNet(11), 29.5e6),
    # DeconvNet: "252M" parameters (Noh et al. 2015, Sec. 4.1 / Table 3 discussion).
    "deconvnet": (lambda: DeconvNet(21), 252.0e6),
    # DeepLab-LargeFOV: "20.5M" parameters (Chen et al. 2015, Table 2).
    "deeplabv1": (lambda: DeepLabV1(21), 20.5e6),
}


@pytest.mark.parametrize("name", PAPER_COUNTS)
def test_paper_parameter_counts(name):
    build, expected = PAPER_COUNTS[name]
    with torch.device("meta"):
        model = build()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(expected, rel=0.02)


def test_fcn_upsampling_starts_bilinear():
    model = FCNVGG(3, variant="8s", width=16, backbone=VGG)
    x = torch.randn(1, 3, 4, 6)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    interior = (..., slice(1, -1), slice(1, -1))  # borders differ: the transposed conv sees zero padding
    assert torch.allclose(model.upsample_fr(x)[interior], expected[interior], atol=1e-6)


def test_deconvnet_states_its_size_rule():
    with pytest.raises(
        SegtrainError, match=r"DeconvNet needs inputs of at least 193x193 .* got 97 x 131 \(H x W\)"
    ):
        ZOO["deconvnet"]()(torch.zeros(1, 3, 97, 131))


def test_pspnet_pooling_matches_torch_where_torch_cannot_export(tmp_path):
    for height, width in [(7, 9), (60, 61), (33, 97)]:
        x = torch.randn(2, 4, height, width)
        for bins in (1, 2, 3, 6):
            assert torch.allclose(adaptive_avg_pool2d(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-5)

    class TorchPooling(nn.Module):
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, 6)

    # pytorch #42653 / mmseg #1870: adaptive pooling does not export with dynamic H, W.
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        export_onnx(TorchPooling(), torch.randn(1, 3, 60, 60), tmp_path / "pool.onnx", opset=17)


def test_unpooling_by_scatter_matches_torch():
    x = torch.randn(2, 3, 9, 13)
    pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(
        max_unpool2d(pooled, indices, (9, 13)), F.max_unpool2d(pooled, indices, 2, 2, output_size=(9, 13))
    )


def test_vnet_odd_volume_backward_and_export(tmp_path):
    model = VNet(3, 1, base_channels=4)
    x = torch.randn(1, 1, 37, 45, 53)
    out = model(x)
    assert out.shape == (1, 3, 37, 45, 53)
    out.square().mean().backward()
    assert model.input[0].weight.grad.abs().sum() > 0
    model.eval()
    sample = torch.randn(1, 1, 19, 21, 18)
    torch.onnx.export(
        model,
        (sample,),
        str(tmp_path / "vnet.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {2: "d", 3: "h", 4: "w"}, "logits": {2: "d", 3: "h", 4: "w"}},
        opset_version=17,
        dynamo=False,
    )
    run = onnx_runner(tmp_path / "vnet.onnx")
    with torch.no_grad():
        for size in [(19, 21, 18), (37, 45, 53)]:
            volume = torch.randn(1, 1, *size)
            expected = model(volume)
            assert (run(volume) - expected).abs().max() / expected.abs().max() < 1e-4


def test_vnet_paper_configuration():
    with torch.device("meta"):
        model = VNet()
    # Fig. 1 of Milletari et al. 2016: 16-256 channels, 1/2/3/3/3 convolutions down, 3/3/2/1 up.
    assert [len(stage.convs) // 2 for stage in model.down] == [2, 3, 3, 3]
    assert [len(stage.convs) // 2 for stage in model.up] == [3, 3, 2, 1]
    assert [stage.convs[0].in_channels for stage in model.up] == [256, 128, 64, 32]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(65.2e6, rel=0.01)


def _configs_of_task(group: str, task: str) -> list[str]:
    return [
        name
        for name in config_groups()[group]
        if config_task(compose("config", [f"{group}={name}"])[group]._target_) == task
    ]


@pytest.mark.parametrize("model_name", [m for m in _configs_of_task("model", "semantic") if m != "vnet"])
def test_every_model_config_with_every_2d_data_config(model_name):
    """Shapes only, on the meta device: the paper-size configs wire in_channels and num_classes."""
    for data in [d for d in _configs_of_task("data", "semantic") if d != "decathlon"]:
        cfg = compose("config", [f"model={model_name}", f"data={data}", "data.root=/tmp"])
        if "backbone" in cfg.model:
            cfg.model.backbone.pretrained = False  # shapes only: no ImageNet weights
        with torch.device("meta"):
            model = instantiate(cfg.model).eval()
            out = model(torch.empty(1, cfg.data.in_channels, 224, 224))
        assert out.shape == (1, cfg.data.num_classes, 224, 224), (model_name, data)


def test_vnet_config_with_the_volume_data_config():
    cfg = compose("config", ["experiment=vnet_decathlon", "data.root=/tmp"])
    with torch.device("meta"):
        out = instantiate(cfg.model)(torch.empty(1, cfg.data.in_channels, 64, 128, 128))
    assert out.shape == (1, cfg.data.num_classes, 64, 128, 128)
