"""What torchvision's two-stage detectors share in segtrain (Mask R-CNN, PANet, MaskLab): the ResNet-FPN trunk
from torchvision's or timm's ResNet, stage freezing, the transform, anchors, RPN and box head of the
paper's recipe or torchvision's v2, and a resize that computes one size in PyTorch, TorchScript and ONNX.
The papers' own parts (heads, paths, losses) live in their model files."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.models.detection.transform import (
    GeneralizedRCNNTransform,
    resize_boxes,
)
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from segtrain.compat import shape_as_tensor
from segtrain.errors import SegtrainError
from segtrain.models.backbones import (
    RANDOM_INIT,
    create_backbone,
    fetch_pretrained,
    local_weights,
    record_source,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TimmFPN(nn.Module):
    """A timm trunk's four stages (strides 4-32) under a feature pyramid, as torchvision's detectors take
    it: an ordered dict of maps named "0".."3" and "pool", and ``out_channels``."""

    def __init__(self, trunk: nn.Module, out_channels: int, norm_layer=None):
        super().__init__()
        self.body = trunk
        self.fpn = FeaturePyramidNetwork(
            trunk.feature_info.channels(),
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(features)))


def _torchvision_trunk(name: str, pretrained: bool, weights: str | None, norm_layer) -> nn.Module:
    trunk = torchvision.models.get_model(name, weights=None, norm_layer=norm_layer)
    if weights is not None:
        path = local_weights(weights)
        trunk.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
        record_source(trunk, name, f"the file {path}")
    elif pretrained:
        default = torchvision.models.get_model_weights(name).DEFAULT
        state = fetch_pretrained(name, lambda: default.get_state_dict(progress=False))
        trunk.load_state_dict(state)
        record_source(trunk, name, f"ImageNet weights ({default.url})")
    else:
        record_source(trunk, name, RANDOM_INIT)
    return trunk


def freeze_stages(trunk: nn.Module, stages: list[str], trainable_layers: int) -> None:
    """Trains the last ``trainable_layers`` of the stem and ``stages`` (named modules, first to last)."""
    trained = stages[::-1][:trainable_layers]
    for name, parameter in trunk.named_parameters():
        stage = next((stage for stage in stages if name.startswith(stage + ".")), None)
        parameter.requires_grad_(stage in trained if stage else trainable_layers > len(stages))


def resnet_fpn(
    name: str = "resnet50",
    source: str = "torchvision",
    pretrained: bool = False,
    weights: str | None = None,
    trainable_layers: int = 3,
    fpn_channels: int = 256,
    frozen_norm: bool = True,
    fpn_norm: bool = False,
) -> nn.Module:
    """A ResNet's stages 2-5 under an FPN (P2-P6), from torchvision's or timm's trunk.

    ``trainable_layers``: how many of the last stages train (3: the paper's frozen stem and first stage;
    5: all). ``frozen_norm``: the trunk's BatchNorm statistics and affine stay as pretrained (the paper's
    detectors train with few images per GPU, too few for batch statistics).
    """
    if not 0 <= trainable_layers <= 5:
        raise SegtrainError(f"model.backbone.trainable_layers={trainable_layers} must be between 0 and 5")
    norm_layer = FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d
    pyramid_norm = nn.BatchNorm2d if fpn_norm else None
    if source == "torchvision":
        if name not in torchvision.models.list_models(torchvision.models):
            raise SegtrainError(f"model.backbone.name={name} is not a torchvision classification model")
        trunk = _torchvision_trunk(name, pretrained, weights, norm_layer)
        freeze_stages(trunk, [f"layer{index}" for index in range(1, 5)], trainable_layers)
        widths = [trunk.inplanes // 8, trunk.inplanes // 4, trunk.inplanes // 2, trunk.inplanes]
        return_layers = {f"layer{index + 1}": str(index) for index in range(4)}
        backbone = BackboneWithFPN(
            trunk,
            return_layers,
            widths,
            fpn_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=pyramid_norm,
        )
        backbone.weights_source = trunk.weights_source
        return backbone
    if source != "timm":
        raise SegtrainError(f"model.backbone.source={source} must be torchvision or timm")
    trunk = create_backbone(name, out_indices=(1, 2, 3, 4), pretrained=pretrained, weights=weights)
    if frozen_norm:
        from timm.layers import freeze_batch_norm_2d

        trunk = freeze_batch_norm_2d(trunk)
    freeze_stages(trunk, trunk.feature_info.module_name(), trainable_layers)
    return TimmFPN(trunk, fpn_channels, norm_layer=pyramid_norm)


def detector_options(
    num_classes: int,
    backbone: dict | None,
    variant: str,
    fpn_channels: int,
    min_size: int,
    max_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    representation_size: int,
    box_batch_size_per_image: int,
    box_positive_fraction: float,
    box_score_thresh: float,
    box_detections_per_img: int,
    anchor_sizes: Sequence[int],
) -> dict:
    """The arguments torchvision's two-stage detectors share: the ResNet-FPN trunk (``backbone``:
    ``resnet_fpn`` arguments), transform, anchors, RPN and box head, for the paper's ``variant`` (v1) or
    torchvision's improved recipe (v2)."""
    if variant not in ("v1", "v2"):
        raise SegtrainError(f"model.variant={variant} must be v1 (the paper's) or v2 (torchvision's recipe)")
    v2 = variant == "v2"
    trunk = resnet_fpn(
        fpn_channels=fpn_channels, **{"frozen_norm": not v2, "fpn_norm": v2, **(backbone or {})}
    )
    anchors = AnchorGenerator(tuple((size,) for size in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    if v2:
        box_head = FastRCNNConvFCHead(
            (fpn_channels, 7, 7), [fpn_channels] * 4, [representation_size], norm_layer=nn.BatchNorm2d
        )
        rpn_head = RPNHead(fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    else:
        box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
        rpn_head = RPNHead(fpn_channels, anchors.num_anchors_per_location()[0])
    return {
        "backbone": trunk,
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": list(image_mean),
        "image_std": list(image_std),
        "rpn_anchor_generator": anchors,
        "rpn_head": rpn_head,
        "box_head": box_head,
        "box_predictor": FastRCNNPredictor(representation_size, num_classes),
        "box_batch_size_per_image": box_batch_size_per_image,
        "box_positive_fraction": box_positive_fraction,
        "box_score_thresh": box_score_thresh,
        "box_detections_per_img": box_detections_per_img,
    }


def resize_within(image: torch.Tensor, min_size: float, max_size: float) -> torch.Tensor:
    """Bilinear resize of [N,C,H,W] so that the shorter side is ``min_size`` and the longer at most
    ``max_size``: the size computed as floor(side x scale) in float32 tensor ops, the same eagerly, in
    TorchScript and in the ONNX graph (a traced size stays dynamic)."""
    if torch.jit.is_scripting():
        shape = torch.tensor(image.shape[-2:], dtype=torch.float32)
    else:
        shape = shape_as_tensor(image)[-2:].to(torch.float32)
    scale = torch.min(min_size / shape.min(), max_size / shape.max())
    size = torch.floor(shape * scale).to(torch.int64)
    if torch.jit.is_scripting():
        return F.interpolate(image, size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False)
    return F.interpolate(image, size=(size[0], size[1]), mode="bilinear", align_corners=False)


class StableSizeTransform(GeneralizedRCNNTransform):
    """torchvision's resize to ``min_size`` / ``max_size`` with one size computation for PyTorch,
    TorchScript and ONNX (``resize_within``). torchvision computes the scale in double eagerly, in float32
    when scripted and lets onnxruntime round it when traced, so at some image sizes the exported model
    resized a pixel apart from PyTorch and returned other detections."""

    def resize(
        self, image: torch.Tensor, target: Optional[dict[str, torch.Tensor]] = None
    ) -> tuple[torch.Tensor, Optional[dict[str, torch.Tensor]]]:
        height, width = image.shape[-2:]
        if self.training:
            if self._skip_resize:
                return image, target
            size = self.torch_choice(self.min_size)
        else:
            size = self.min_size[-1]
        image = resize_within(image[None], float(size), float(self.max_size))[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (height, width), image.shape[-2:])
            if "masks" in target:
                masks = target["masks"][:, None].float()
                target["masks"] = F.interpolate(masks, size=image.shape[-2:])[:, 0].byte()
            if "semantic" in target:  # Panoptic FPN's per-pixel classes, resized as the image
                semantic = target["semantic"][None, None].float()
                target["semantic"] = F.interpolate(semantic, size=image.shape[-2:])[0, 0].byte()
        return image, target
