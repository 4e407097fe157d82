"""Every model's parameter count at its paper's settings against a count from outside segtrain: a reference
implementation built here (torchvision's networks and detectors, torch.nn's recurrent layers), or the
paper's layer list written out below, each term named by the layer it counts. A count that is only the
model's own output would prove nothing. (The paper-stated counts of FCN-8s, SegNet, DeconvNet and
DeepLab-LargeFOV, and smp's PAN, live in test_model_zoo.py; Mask R-CNN's torchvision counts in
test_instances.py.) All models are built on the meta device: no memory, no time."""

import pytest
import torch
import torch.nn as nn
import torchvision
from hydra.utils import instantiate

from segtrain.config import compose

K = 21  # PASCAL VOC's classes, with background


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int = 1, bias: bool = True, dims: int = 2) -> int:
    """Weights (and bias) of a k x k (x k) convolution."""
    return c_in * c_out * k**dims + (c_out if bias else 0)


def bn(channels: int) -> int:
    return 2 * channels  # gamma and beta; running statistics are buffers


def torchvision_resnet(depth: int) -> int:
    """torchvision's ResNet trunk without its ImageNet classifier (timm's, which segtrain uses, is the same
    network)."""
    with torch.device("meta"):
        network = getattr(torchvision.models, f"resnet{depth}")()
    return count(network) - count(network.fc)


def torchvision_vgg16_convs(last: int | None = None) -> int:
    """VGG16's 13 conv layers (or its ``features`` up to index ``last``)."""
    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    return count(features if last is None else features[:last])


def ours(model: str, data: str = "voc", *overrides: str) -> int:
    cfg = compose("config", [f"model={model}", f"data={data}", "data.root=/tmp", *overrides])
    if "backbone" in cfg.model:
        cfg.model.backbone.pretrained = False
    with torch.device("meta"):
        return count(instantiate(cfg.model))


def separable(c_in: int, c_out: int) -> int:
    """A 3x3 (atrous) depthwise separable conv as DeepLab v3+ uses it: depthwise (BN), pointwise (BN)."""
    return c_in * 9 + bn(c_in) + conv(c_in, c_out, bias=False) + bn(c_out)


def largefov_head(fc: int = 1024) -> int:
    """DeepLab-LargeFOV's fc6 (3x3 atrous, 512 -> fc), fc7 (1x1) and classifier."""
    return conv(512, fc, 3) + conv(fc, fc) + conv(fc, K)


def aspp_l(channels: int = 2048) -> int:
    """DeepLab v2's ASPP-L: four 3x3 atrous convs to the classes, summed."""
    return 4 * conv(channels, K, 3)


def lstm2d_layer(c_in: int, hidden: int) -> int:
    """Byeon et al. 2015: four directions, each with input, two forget, output and cell gates (5 x hidden)
    over the input and the two previous hidden states (i-1, j) and (i, j-1)."""
    return 4 * (5 * hidden * c_in + 5 * hidden + 5 * hidden * 2 * hidden)


def graph_lstm_layer(c_in: int, hidden: int, first: bool) -> int:
    """Liang et al. 2016, Eq. 2: W (input, 4 gates, with bias), U (own state, 4 gates; none in the first
    layer, which starts from the zero state), U^n (mean neighbour state: input, output, cell gates) and
    U^fn (the adaptive forget gate on each neighbour)."""
    return (
        conv(c_in, 4 * hidden) + (0 if first else 4 * hidden * hidden) + 3 * hidden * hidden + hidden * hidden
    )


def reference_counts() -> dict:
    resnet50, resnet101 = torchvision_resnet(50), torchvision_resnet(101)
    vgg = torchvision_vgg16_convs()
    with torch.device("meta"):
        fcn = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=K, aux_loss=True
        )
        fpn = torchvision.ops.FeaturePyramidNetwork([256, 512, 1024, 2048], 256)
        deeplabv3 = torchvision.models.segmentation.deeplabv3_resnet101(
            weights=None, weights_backbone=None, num_classes=K
        )
        gru = count(nn.GRU(256, 100, bidirectional=True)) + 3 * count(nn.GRU(200, 100, bidirectional=True))
    # torchvision's DeepLabHead has one 3x3 conv (256 -> 256, BN) that the paper's head does not: Sec. 3.3
    # goes from the concatenated ASPP branches' 1x1 conv (256, BN) to the final 1x1 conv.
    deeplabv3_paper = count(deeplabv3) - conv(256, 256, 3, bias=False) - bn(256)
    with torch.device("meta"):
        imagenet_vgg16 = torchvision.models.vgg16()
    # Long et al. 2015, Fig. 3: VGG16 with fc6/fc7 convolutionalised (torchvision's weights in conv form),
    # fc8 replaced by a 1x1 score layer; x2 transposed convs (4x4) fuse pool4's 1x1 scores (16s) and pool3's
    # (8s); the last transposed conv (kernel twice the factor) upsamples to the input; no biases in them.
    fcn32 = count(imagenet_vgg16) - count(imagenet_vgg16.classifier[6]) + conv(4096, K) + K * K * 64 * 64
    fcn16 = fcn32 - K * K * 64 * 64 + conv(512, K) + K * K * 4 * 4 + K * K * 32 * 32
    fcn8 = fcn16 - K * K * 32 * 32 + conv(256, K) + K * K * 4 * 4 + K * K * 16 * 16
    return {
        "fcn32s": fcn32,
        "fcn16s": fcn16,
        "fcn8s": fcn8,
        # torchvision's FCN-ResNet50 with its auxiliary FCN head on layer3.
        "fcn": count(fcn),
        # ResNet-101 + ASPP-L (Chen et al. 2017, Fig. 4).
        "deeplabv2": resnet101 + aspp_l(),
        "deeplabv3": deeplabv3_paper,
        # Chen et al. 2018, Sec. 3.2: atrous separable convs in ASPP and decoder. ASPP: 1x1, three separable
        # 3x3 at rates 6/12/18 and image pooling's 1x1, each 256 (BN), projected by a 1x1 (256, BN); decoder:
        # the stride-4 features reduced to 48 (1x1, BN), two separable 3x3 of 256, the classifier.
        "deeplabv3plus": resnet101
        + 2 * (conv(2048, 256, bias=False) + bn(256))
        + 3 * separable(2048, 256)
        + conv(5 * 256, 256, bias=False)
        + bn(256)
        + conv(256, 48, bias=False)
        + bn(48)
        + separable(256 + 48, 256)
        + separable(256, 256)
        + conv(256, K),
        # Zhao et al. 2017, Fig. 3: ResNet-101, the pyramid's four 1x1 convs (2048 -> 512, BN), a 3x3 conv
        # over [features, pyramid] (4096 -> 512, BN), the classifier; the auxiliary FCN head on res4 (1024 ->
        # 256).
        "pspnet": resnet101
        + 4 * (conv(2048, 512, bias=False) + bn(512))
        + conv(4096, 512, 3, bias=False)
        + bn(512)
        + conv(512, K)
        + conv(1024, 256, 3, bias=False)
        + bn(256)
        + conv(256, K),
        # Kirillov et al. 2019, Fig. 3: ResNet-50, torchvision's FPN, the semantic head's 3x3 convs (128, GN):
        # one from each of P2 and P3, two from P4, three from P5, and the 1x1 classifier.
        "fpn": resnet50
        + count(fpn)
        + 4 * conv(256, 128, 3, bias=False)
        + 3 * conv(128, 128, 3, bias=False)
        + 7 * 2 * 128
        + conv(128, K),
        # Liu et al. 2015: DeepLab-LargeFOV with the L2-normalised fc7 and global features, each with a
        # learned per-channel scale, concatenated (2048) before the classifier.
        "parsenet": vgg + conv(512, 1024, 3) + conv(1024, 1024) + 2 * 1024 + conv(2048, K),
        # Chen et al. 2016: LargeFOV + the attention model (3x3 conv over the three scales' fc7, 512, then 1x1
        # to one weight per scale).
        "attention_to_scale": vgg + largefov_head() + conv(3 * 1024, 512, 3) + conv(512, 3),
        # Huang et al. 2017: VGG16 and two LargeFOV branches (original and reverse).
        "reverse_attention": vgg + 2 * largefov_head(),
        "reverse_attention_resnet101": resnet101 + 2 * aspp_l(),
        # Fu et al. 2019, Fig. 2 and the authors' DANetHead: per branch a 3x3 conv 2048 -> 512 (BN) before and
        # 512 -> 512 (BN) after the attention module; the position module's 1x1 query and key (512 -> 64),
        # value (512 -> 512) and scale alpha, the channel module's scale beta; three classifiers.
        "danet": resnet101
        + 2 * (conv(2048, 512, 3, bias=False) + bn(512) + conv(512, 512, 3, bias=False) + bn(512))
        + 2 * conv(512, 64)
        + conv(512, 512)
        + 1
        + 1
        + 3 * conv(512, K),
        # Liu et al. 2015: VGG16 with 4096-wide fc6 (3x3) and fc7, the unary classifier; b12's 50x50 filter
        # per class (no bias), b13's 9x9 conv to 5 components per class.
        "dpn": vgg + conv(512, 4096, 3) + conv(4096, 4096) + conv(4096, K) + K * 50 * 50 + conv(K, 5 * K, 9),
        # Byeon et al. 2015: 3x3 blocks of RGB (27 values), 2D-LSTM layers of 25, 50, 150 units, tanh layers
        # of 30 and 120 units over 2x2 blocks of the previous layer, a per-block classifier.
        "lstm2d": lstm2d_layer(27, 25)
        + conv(4 * 25, 30)
        + lstm2d_layer(30, 50)
        + conv(4 * 50, 120)
        + lstm2d_layer(120, 150)
        + conv(150, K),
        # Visin et al. 2016: VGG16 conv1_1-conv3_3, two ReNet layers (a vertical then a horizontal
        # bidirectional GRU sweep of 100 units each, torch.nn.GRU), two 2x2 transposed convs of 50, 1x1
        # classifier.
        "reseg": torchvision_vgg16_convs(16) + gru + conv(200, 50, 2) + conv(50, 50, 2) + conv(50, K),
        # Liang et al. 2016: LargeFOV, the 1x1 confidence map, two Graph LSTM layers of 512 reading fc7
        # (1024), the classifier over [fc7, states].
        "graph_lstm": vgg
        + conv(512, 1024, 3)
        + conv(1024, 1024)
        + conv(1024, K)
        + graph_lstm_layer(1024, 512, first=True)
        + graph_lstm_layer(1024, 512, first=False)
        + conv(1024 + 512, K),
        # Ronneberger et al. 2015, Fig. 1: two 3x3 convs per level (64 ... 1024), 2x2 up-convs halving the
        # channels, two 3x3 convs after each concatenation, the 1x1 classifier to 2 classes.
        "unet": sum(
            conv(a, b, 3) + conv(b, b, 3)
            for a, b in [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
        )
        + sum(
            conv(c, c // 2, 2) + conv(c, c // 2, 3) + conv(c // 2, c // 2, 3) for c in [1024, 512, 256, 128]
        )
        + conv(64, 2),
        # Milletari et al. 2016, Fig. 1: 5x5x5 convs with PReLU (one slope per channel): 1 at 16 channels,
        # then per stage a 2x2x2 stride-2 conv doubling the channels and 2, 3, 3, 3 convs; up: 2x2x2
        # transposed convs to half the stage's width, 3, 3, 2, 1 convs over [up, skip], the 1x1x1 classifier.
        "vnet": conv(1, 16, 5, dims=3)
        + 16
        + sum(
            conv(c, 2 * c, 2, dims=3) + 2 * c + n * (conv(2 * c, 2 * c, 5, dims=3) + 2 * c)
            for c, n in [(16, 2), (32, 3), (64, 3), (128, 3)]
        )
        + sum(
            conv(i, o // 2, 2, dims=3) + o // 2 + n * (conv(o, o, 5, dims=3) + o)
            for i, o, n in [(256, 256, 3), (256, 128, 3), (128, 64, 2), (64, 32, 1)]
        )
        + conv(32, 2, 1, dims=3),
    }


def text_objseg_count(words: int) -> int:
    from segtrain.models.text_objseg import TextObjSeg

    with torch.device("meta"):
        return count(
            TextObjSeg(
                ["<pad>", "<unk>", *(f"w{i}" for i in range(words - 2))], backbone={"pretrained": False}
            )
        )


def adversary_count(architecture: str, kind: str) -> int:
    from segtrain.tasks.semantic.adversarial import Adversary

    with torch.device("meta"):
        return count(Adversary(K, input=kind, architecture=architecture).discriminator)


OURS = {
    "fcn32s": lambda: ours("fcn32s"),
    "fcn16s": lambda: ours("fcn16s"),
    "fcn8s": lambda: ours("fcn8s"),
    "fcn": lambda: ours("fcn"),
    "deeplabv2": lambda: ours("deeplabv2"),
    "deeplabv3": lambda: ours("deeplabv3"),
    "deeplabv3plus": lambda: ours("deeplabv3plus"),
    "pspnet": lambda: ours("pspnet"),
    "fpn": lambda: ours("fpn"),
    "parsenet": lambda: ours("parsenet"),
    "attention_to_scale": lambda: ours("attention_to_scale"),
    "reverse_attention": lambda: ours("reverse_attention"),
    "reverse_attention_resnet101": lambda: ours("reverse_attention", "voc", "model.backbone.name=resnet101"),
    "danet": lambda: ours("danet"),
    "dpn": lambda: ours("dpn"),
    "lstm2d": lambda: ours("lstm2d"),
    "reseg": lambda: ours("reseg"),
    "graph_lstm": lambda: ours("graph_lstm"),
    "unet": lambda: ours("unet", "isbi2012", "data.in_channels=1", "data.classes=[a,b]"),
    "vnet": lambda: ours("vnet", "decathlon", "data.in_channels=1", "data.classes=[a,b]"),
    "panet": lambda: ours("panet", "coco_instances", "task=instance", "model.num_classes=91"),
    "masklab": lambda: ours("masklab", "coco_instances", "task=instance", "model.num_classes=91"),
    "panoptic_fpn": lambda: ours("panoptic_fpn", "coco_panoptic", "task=panoptic"),
    "text_objseg": lambda: text_objseg_count(8803),
    **{
        f"discriminator_{architecture}_{kind}": lambda architecture=architecture, kind=kind: adversary_count(
            architecture, kind
        )
        for architecture in ("stanford", "pascal")
        for kind in ("basic", "product")
    },
}


def detection_references() -> dict:
    """torchvision's Mask R-CNN R50-FPN (91 classes) and Faster R-CNN on a ResNet-101 FPN, plus the layers
    PANet and MaskLab add, each named."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    # resnet_fpn_backbone's default FrozenBatchNorm2d, as torchvision builds its detectors from ImageNet
    # weights (the paper's setting): the norms hold buffers, not parameters.
    with torch.device("meta"):
        mask_rcnn = count(
            MaskRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None), num_classes=91)
        )
        mask_rcnn_things = count(
            MaskRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None), num_classes=80 + 1)
        )
        trunk101 = resnet_fpn_backbone(backbone_name="resnet101", weights=None)
        faster_rcnn101 = count(FasterRCNN(trunk101, num_classes=91))
    level, classes = 256, 91
    return {
        # Liu et al. 2018: + the bottom-up path (three steps of two 3x3 convs), adaptive pooling's three extra
        # fc1 of the box head (one per level: 256 x 7 x 7 -> 1024) and three extra conv1 of the mask head, and
        # the fc fusion branch (3x3 convs 256 and 128, fc 128 x 14 x 14 -> 28 x 28).
        "panet": mask_rcnn
        + 6 * conv(level, level, 3)
        + 3 * conv(level * 7 * 7, 1024)
        + 3 * conv(level, level, 3)
        + conv(level, level, 3)
        + conv(level, level // 2, 3)
        + conv(level // 2 * 14 * 14, 28 * 28),
        # Chen et al. 2018: + the semantic head (3x3 conv 256, 1x1 to the classes) and the direction head (3x3
        # conv 256, 1x1 to 8 bins), the 1x1 conv merging the two pooled maps, and the hypercolumn refinement
        # (three 3x3 convs of 128 over [coarse logits, stride-4 features], 1x1 to the mask).
        # Kirillov et al. 2019: Mask R-CNN over COCO panoptic's 80 things, plus the semantic branch: P2-P5
        # each through 1, 1, 2 and 3 stages of a 3x3 conv to 128 (no bias) and GroupNorm, and a 1x1 conv
        # to the 53 stuff classes and "other".
        "panoptic_fpn": mask_rcnn_things
        + 4 * conv(level, 128, 3, bias=False)
        + 3 * conv(128, 128, 3, bias=False)
        + 7 * 2 * 128
        + conv(128, 53 + 1),
        "masklab": faster_rcnn101
        + conv(level, 256, 3)
        + conv(256, classes)
        + conv(level, 256, 3)
        + conv(256, 8)
        + conv(2, 1)
        + conv(level + 1, 128, 3)
        + 2 * conv(128, 128, 3)
        + conv(128, 1),
    }


def discriminator(architecture: str, kind: str) -> int:
    """Luc et al. 2016, Fig. 2 as we read it, for K classes over RGB. The label input has K maps (basic) or
    3K (product: the image times each class map). Stanford: a 5x5 conv (64) on the label input, two 5x5
    convs (16, 64) on the image, then 3x3 convs of 128, 256 and 512 with pooling between and a 3x3 conv to
    the logit. Pascal: 3x3 convs of 96, 128, 128, 256, 256 and 512 over [image, labels] (the product input
    alone, which holds the image already), then the 3x3 conv to the logit."""
    labels = 3 * K if kind == "product" else K
    if architecture == "stanford":
        branches = conv(labels, 64, 5) + conv(3, 16, 5) + conv(16, 64, 5)
        return branches + conv(128, 128, 3) + conv(128, 256, 3) + conv(256, 512, 3) + conv(512, 1, 3)
    widths = [labels if kind == "product" else labels + 3, 96, 128, 128, 256, 256, 512]
    return sum(conv(a, b, 3) for a, b in zip(widths, widths[1:])) + conv(512, 1, 3)


def referring_and_adversarial_references() -> dict:
    with torch.device("meta"):
        vgg16 = count(torchvision.models.vgg16())  # conv1_1 to fc8, ImageNet's 1000 scores as the feature
        lstm = count(nn.LSTM(1000, 1000, batch_first=True))
    words = 8803  # ReferIt's training vocabulary with <pad> and <unk>
    return {
        # Hu et al. 2016: VGG16 to fc8, a 1000-d embedding and a 1000-unit LSTM (torch.nn.LSTM), the MLP over
        # [image 1000, expression 1000, spatial 8] (1x1 500, 1x1 1), the 32x upsampling's 64x64 kernel.
        "text_objseg": vgg16 + words * 1000 + lstm + conv(2008, 500) + conv(500, 1) + 64 * 64,
        **{
            f"discriminator_{architecture}_{kind}": discriminator(architecture, kind)
            for architecture in ("stanford", "pascal")
            for kind in ("basic", "product")
        },
    }


@pytest.fixture(scope="module")
def references() -> dict:
    return {**reference_counts(), **detection_references(), **referring_and_adversarial_references()}


@pytest.mark.parametrize("name", OURS)
def test_parameter_count_equals_its_outside_reference(name, references):
    assert OURS[name]() == references[name]


#: Model configs checked in another file, or not a paper's configuration.
ELSEWHERE = {
    "segnet": "test_model_zoo.py: the paper's 29.5M",
    "deconvnet": "test_model_zoo.py: the paper's 252M",
    "deeplabv1": "test_model_zoo.py: the paper's 20.5M; also every LargeFOV model here",
    "pan": "test_model_zoo.py: segmentation_models_pytorch's PAN",
    "mask_rcnn": "test_instances.py: torchvision's maskrcnn_resnet50_fpn, v1 and v2",
    "mask_rcnn_v2": "test_instances.py: torchvision's maskrcnn_resnet50_fpn_v2",
    "deeplabv3plus_xception": "the Xception-65 trunk is timm's",
    "unet_small": "a small U-Net for CPU runs, not a paper's",
    "text_objseg_small": "a small text_objseg for CPU runs, not a paper's",
}


def test_every_model_config_has_a_parameter_count_check():
    from segtrain.config import config_groups

    assert set(config_groups()["model"]) - set(OURS) - set(ELSEWHERE) == set()
