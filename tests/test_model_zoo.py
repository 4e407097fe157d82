"""The model zoo: every model exported (ONNX at two sizes, TorchScript),
and at its paper configuration with the paper's parameter count."""

import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate

from segtrain.commands.export import export_onnx, onnx_runner, write_and_compare
from segtrain.config import compose, config_groups
from segtrain.errors import SegtrainError
from segtrain.losses import CrossEntropyLoss
from segtrain.models.attention_to_scale import AttentionToScale
from segtrain.models.blocks import ScaleFusion, adaptive_avg_pool2d, max_unpool2d
from segtrain.models.danet import ChannelAttention, DANet, PositionAttention
from segtrain.models.deconvnet import DeconvNet
from segtrain.models.deep_parsing_network import DeepParsingNetwork, triple_penalty
from segtrain.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus
from segtrain.models.fcn import FCN, FCNVGG
from segtrain.models.fpn import SemanticFPN
from segtrain.models.lstm2d import SceneLabelingLSTM
from segtrain.models.parsenet import ParseNet
from segtrain.models.pspnet import PSPNet
from segtrain.models.pyramid_attention import PyramidAttentionNetwork
from segtrain.models.reseg import ReSeg
from segtrain.models.reverse_attention import ReverseAttentionNetwork, reverse_attention_fusion
from segtrain.models.segnet import SegNet
from segtrain.models.unet import UNet
from segtrain.models.vnet import VNet
from segtrain.tasks.declared import config_task
from segtrain.tasks.module import ExportSpec

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
    # Zoo II.
    "attention_to_scale": lambda: AttentionToScale(5, fc_channels=32, attention_channels=16, backbone=VGG),
    "reverse_attention": lambda: ReverseAttentionNetwork(5, fc_channels=32, backbone=VGG),
    "reverse_attention_resnet": lambda: ReverseAttentionNetwork(5, backbone=RESNET),
    "pan": lambda: PyramidAttentionNetwork(5, backbone=RESNET, channels=32),
    "danet": lambda: DANet(5, backbone=RESNET, channels=32),
    "dpn": lambda: DeepParsingNetwork(5, fc_channels=32, local_size=6, backbone=VGG),
    # Zoo III.
    "lstm2d": lambda: SceneLabelingLSTM(5, lstm_channels=(4, 6), hidden_channels=(5,)),
    "reseg": lambda: ReSeg(5, hidden=8, upsample_channels=6, backbone=VGG),
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


# V-Net is volumetric; the Graph LSTM computes SLIC superpixels from pixel values, which the meta device
# has none of (test_recurrent_models.py builds its config).
@pytest.mark.parametrize(
    "model_name", [m for m in _configs_of_task("model", "semantic") if m not in ("vnet", "graph_lstm")]
)
def test_every_model_config_with_every_2d_data_config(model_name):
    """Shapes only, on the meta device: the paper-size configs wire in_channels and num_classes."""
    # DPN's 2,500 window offsets take seconds even on the meta device; the window does not change shapes.
    faster = ["model.local_size=3"] if model_name == "dpn" else []
    for data in [d for d in _configs_of_task("data", "semantic") if d != "decathlon"]:
        cfg = compose("config", [f"model={model_name}", f"data={data}", "data.root=/tmp", *faster])
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


def _scale_network(x):
    """A stand-in network for ScaleFusion: features and scores at stride 2 that depend on the scale."""
    pooled = F.avg_pool2d(x, 2)
    return pooled, torch.cat([pooled.mean(1, keepdim=True), -pooled.mean(1, keepdim=True)], 1) * x.shape[-1]


def test_attention_weights_sum_to_one_and_max_fusion_is_the_same_module():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 33, 47)
    attention = ScaleFusion((1.0, 0.75, 0.5), merge="attention", feature_channels=3, attention_channels=8)
    merged, scores = attention(_scale_network, x)
    features = [
        F.interpolate(
            _scale_network(
                x
                if s == 1
                else F.interpolate(x, scale_factor=s, mode="bilinear", recompute_scale_factor=False)
            )[0],
            size=scores[0].shape[-2:],
            mode="bilinear",
        )
        for s in (1.0, 0.75, 0.5)
    ]
    weights = attention.attention_weights(features)
    assert weights.shape == (2, 3, *scores[0].shape[-2:])
    assert torch.allclose(weights.sum(dim=1), torch.ones(()), atol=1e-6)
    # Each scale's scores come back at that scale's own size; the merge reads them resized to scale 1's.
    assert [tuple(s.shape[-2:]) for s in scores] == [(16, 23), (12, 17), (8, 11)]
    aligned = [F.interpolate(s, size=(16, 23), mode="bilinear") for s in scores]
    assert torch.allclose(merged, sum(weights[:, i : i + 1] * aligned[i] for i in range(3)), atol=1e-5)

    fused, same_scores = ScaleFusion((1.0, 0.75, 0.5), merge="max")(_scale_network, x)
    assert all(torch.equal(a, b) for a, b in zip(scores, same_scores))
    assert torch.equal(fused, torch.stack(aligned).amax(0))
    # DeepLab v2's MSC is this module; Attention to Scale with merge=max is DeepLab v2's fusion.
    assert DeepLabV2(5, backbone={"name": "vgg16", **VGG}, scales=(1.0, 0.5)).fusion.merge == "max"
    assert AttentionToScale(5, fc_channels=8, merge="max", backbone=VGG).fusion.merge == "max"


def test_attention_to_scale_supervises_the_merge_and_every_scale_at_its_own_size():
    """The merged output at the input's size; each scale's scores at that scale's stride-8 size, against the
    labels subsampled there by nearest neighbour (the authors' shrunk labels)."""
    torch.manual_seed(0)
    model = ZOO["attention_to_scale"]().train()
    out = model(torch.randn(2, 3, 65, 71))
    assert out["out"].shape[-2:] == (65, 71) and out["aux_weight"] == 1.0
    assert [tuple(a.shape[-2:]) for a in out["aux"]] == [(9, 9), (6, 7), (4, 5)]  # 65x71, 48x53, 32x35 in
    target = torch.randint(0, 5, (2, 65, 71))
    target[:, :5] = 255
    loss = CrossEntropyLoss()(out, target)
    expected = F.cross_entropy(out["out"], target, ignore_index=255)
    for aux in out["aux"]:
        height, width = aux.shape[-2:]
        rows = (torch.arange(height) * 65 / height).floor().long()
        columns = (torch.arange(width) * 71 / width).floor().long()
        expected = expected + F.cross_entropy(aux, target[:, rows][:, :, columns], ignore_index=255)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_reverse_attention_fusion_on_hand_made_tensors():
    original = torch.tensor([[[[2.0]], [[-2.0]], [[0.0]]]])
    reverse = torch.tensor([[[[1.0]], [[3.0]], [[-4.0]]]])
    # sigmoid(-2) = 0.119203, sigmoid(2) = 0.880797, sigmoid(0) = 0.5
    expected = torch.tensor([2 - 0.119203 * 1, -2 - 0.880797 * 3, 0 - 0.5 * -4]).view(1, 3, 1, 1)
    assert torch.allclose(reverse_attention_fusion(original, reverse), expected, atol=1e-5)


def test_reverse_branch_is_supervised_negated():
    torch.manual_seed(0)
    model = ZOO["reverse_attention"]().train()
    for module in model.modules():
        if isinstance(module, nn.Dropout2d):
            module.p = 0.0
    x = torch.randn(1, 3, 40, 40)
    out = model(x)
    assert len(out["aux"]) == 2 and out["aux_weight"] == 1.0
    conv5 = model.trunk(x)[-1]
    original, reverse = model.original(conv5), model.reverse(conv5)
    resize = lambda t: F.interpolate(t, size=x.shape[-2:], mode="bilinear")  # noqa: E731
    assert torch.allclose(out["aux"][0], resize(original), atol=1e-5)
    assert torch.allclose(out["aux"][1], resize(-reverse), atol=1e-5)
    assert torch.allclose(out["out"], resize(reverse_attention_fusion(original, reverse)), atol=1e-5)


def test_pan_matches_segmentation_models_pytorch():
    """Same encoder (ResNet-34 at stride 16), decoder width 32 and 1-channel pyramid: the parameter counts
    differ only by smp's conv biases in front of BN, which BN cancels and segtrain leaves out."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    theirs = smp.PAN("resnet34", encoder_weights=None, decoder_channels=32, classes=5).eval()
    ours = PyramidAttentionNetwork(
        5, backbone={"name": "resnet34", "output_stride": 16}, channels=32, pyramid_channels=1
    ).eval()
    redundant = sum(m.conv.bias.numel() for m in theirs.decoder.modules() if type(m).__name__ == "ConvBnRelu")
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(ours) == count(theirs) - redundant
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        assert ours(x).shape == theirs(x).shape == (1, 5, 128, 160)


def test_danet_attention_starts_as_the_identity():
    x = torch.randn(2, 16, 7, 9)
    assert torch.equal(PositionAttention(16)(x), x)
    assert torch.equal(ChannelAttention()(x), x)


def test_danet_attention_formulas():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 3, 4)
    position = PositionAttention(16)
    position.gamma.data.fill_(0.5)
    q, k, v = (conv(x).flatten(2)[0] for conv in (position.query, position.key, position.value))
    attention = (q.T @ k).softmax(-1)  # [positions, positions]: row i attends over j
    expected = 0.5 * (v @ attention.T).view_as(x) + x
    assert torch.allclose(position(x), expected, atol=1e-5)
    channel = ChannelAttention()
    channel.beta.data.fill_(2.0)
    flat = x.flatten(2)[0]
    energy = flat @ flat.T
    weights = (energy.max(-1, keepdim=True).values - energy).softmax(-1)
    assert torch.allclose(channel(x), 2.0 * (weights @ flat).view_as(x) + x, atol=1e-5)


def test_danet_supervises_the_sum_and_each_branch():
    model = ZOO["danet"]().train()
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out["aux"]) == 2 and out["aux_weight"] == 1.0


def _context_layout(batch: int, generator: torch.Generator):
    """A layout only context resolves: an ambiguous block (unary 50/50 between classes 1 and 2) whose class
    is 1 when a class-0 marker sits left of it and 2 when it sits right of it."""
    unary = torch.zeros(batch, 3, 6, 24)  # what matters runs along the width
    target = torch.zeros(batch, 6, 24, dtype=torch.long)
    for i in range(batch):
        left = bool(torch.rand((), generator=generator) < 0.5)
        marker = slice(2, 6) if left else slice(18, 22)
        unary[i, :, :, :] = torch.tensor([-4.0, 0.0, 0.0]).view(3, 1, 1)
        target[i] = 1 if left else 2
        unary[i, :, :, marker] = torch.tensor([4.0, -4.0, -4.0]).view(3, 1, 1)
        target[i, :, marker] = 0
    return unary, target


def test_dpn_local_convolution_equals_the_triple_penalty_pixel_by_pixel():
    """b12 at each pixel j and class c: the sum over the 5x5 (or 4x4) window of z around j of
    k_c(z - j) * exp(-|I_j - I_z|^2 / 2 s_a^2) * exp(-|j - z|^2 / 2 s_d^2) * Q_c(z), with Q = 0 outside."""
    torch.manual_seed(0)
    marginals, image = torch.rand(2, 3, 7, 9), torch.randn(2, 3, 7, 9)
    for size in (5, 4):
        filters = torch.randn(3, size, size)
        out = triple_penalty(marginals, image, filters, appearance_sigma=0.8, distance_sigma=1.5)
        first = (size - 1) // 2  # the window of j runs from j - first to j - first + size - 1
        expected = torch.zeros_like(marginals)
        for b, c, y, x in itertools.product(range(2), range(3), range(7), range(9)):
            for dy, dx in itertools.product(range(size), range(size)):
                zy, zx = y - first + dy, x - first + dx
                if 0 <= zy < 7 and 0 <= zx < 9:
                    appearance = math.exp(
                        -(image[b, :, y, x] - image[b, :, zy, zx]).square().sum() / (2 * 0.8**2)
                    )
                    distance = math.exp(-((zy - y) ** 2 + (zx - x) ** 2) / (2 * 1.5**2))
                    expected[b, c, y, x] += (
                        filters[c, dy, dx] * appearance * distance * marginals[b, c, zy, zx]
                    )
        assert torch.allclose(out, expected, atol=1e-5)


def test_dpn_local_term_reads_the_image_at_full_resolution():
    """Changing one input pixel's colour moves b12 (through the appearance term) exactly at the pixels whose
    6x6 window holds it, 3 above or left of it to 2 below or right: b12 works at the input's pixels, not
    on a stride-8 grid."""
    torch.manual_seed(0)
    model = DeepParsingNetwork(3, fc_channels=8, local_size=6, schedule=["local"], backbone=VGG).eval()
    x = torch.randn(1, 3, 32, 40)
    marginals = torch.rand(1, 3, 32, 40)
    moved = x.clone()
    moved[..., 13, 21] += 3.0
    change = (model.mrf.spatial(marginals, moved) - model.mrf.spatial(marginals, x)).abs().sum(1)[0]
    assert change[10:16, 18:24].ne(0).all()
    change[10:16, 18:24] = 0
    assert change.eq(0).all()


def test_dpn_mrf_uses_context_the_unary_cannot_see():
    """A unary that sees one pixel (a 1x1 conv over the unary maps) cannot place the ambiguous block; the
    MRF's 25x25 spatial and 9x9 context layers can, so their loss falls below the unary-only loss. (The
    appearance term is widened to let every pair interact: the "image" here is the unary maps.)"""
    generator = torch.Generator().manual_seed(0)
    unary_maps, target = _context_layout(8, generator)

    def trained_loss(stage: str) -> float:
        torch.manual_seed(0)
        model = DeepParsingNetwork(
            3, fc_channels=8, local_size=25, appearance_sigma=100.0, schedule=[stage], backbone=VGG
        )
        model.unary = nn.Conv2d(3, 3, 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(unary_maps), target)
            loss.backward()
            optimizer.step()
        return loss.item()

    unary_only, with_mrf = trained_loss("unary"), trained_loss("joint")
    assert unary_only > 0.4  # log 2 on the ambiguous pixels, at best
    assert with_mrf < 0.5 * unary_only


def test_dpn_incremental_schedule_trains_one_stage_at_a_time():
    model = ZOO["dpn"]().train()
    stages = []
    for epoch in range(8):
        model.begin_epoch(epoch, 8)
        stages.append(model.stage)
    assert stages == ["unary"] * 2 + ["local"] * 2 + ["global"] * 2 + ["joint"] * 2
    model.begin_epoch(2, 8)  # local: the unary is held fixed, the label context is not used
    model(torch.randn(1, 3, 40, 40)).square().mean().backward()
    assert all(p.grad is None for p in model.unary.parameters())
    assert model.mrf.local.grad.abs().sum() > 0 and model.mrf.context.weight.grad is None
    with pytest.raises(SegtrainError, match="model.schedule"):
        DeepParsingNetwork(3, schedule=["unary", "crf"], backbone=VGG)
