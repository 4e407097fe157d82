"""Backbones through timm, with dilated output strides, and their ImageNet weights.

``output_stride`` 8 or 16 replaces the strides of the last stages with dilation, as DeepLab
(Chen et al. 2017) and PSPNet (Zhao et al. 2017) do; timm implements it for its ResNets.

The paper models start from the ImageNet weights their papers used (``model.backbone.pretrained``):
timm's for ResNets and Xception, torchvision's for VGG16. ``model.backbone.weights`` takes a local file
or an http(s) URL (downloaded once into torch's hub cache) instead. Each backbone records where its
weights came from (``weights_source``), which the run prints and the checkpoint keeps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlparse

import timm
import torch.nn as nn

from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a backbone without pretrained weights records.
RANDOM_INIT = "random initialisation (model.backbone.pretrained=false)"


def local_weights(weights: str) -> str:
    """The local file of ``model.backbone.weights``: the path itself, or an http(s) URL downloaded once into
    torch's hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    if urlparse(weights).scheme not in ("http", "https"):
        if not Path(weights).is_file():
            raise SegtrainError(
                f"model.backbone.weights={weights} does not exist; point it at a .pth or .safetensors state "
                "dict of the backbone (or an http(s) URL of one), or set model.backbone.weights=null"
            )
        return weights
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights).path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading backbone weights %s to %s", weights, target)
        try:
            torch.hub.download_url_to_file(weights, str(target), progress=False)
        except Exception as err:
            raise SegtrainError(
                f"model.backbone.weights={weights} could not be downloaded ({err}); download it by hand and "
                "pass model.backbone.weights=/path/file"
            ) from None
    return str(target)


def fetch_pretrained(name: str, load: Callable[[], T]) -> T:
    """``load()`` of ImageNet weights that may need the network, with one error that names both ways out."""
    try:
        return load()
    except SegtrainError:
        raise
    except Exception as err:
        raise SegtrainError(
            f"model.backbone.pretrained=true, but the ImageNet weights of {name} could not be loaded "
            f"({' '.join(str(err).split())[:200]}). Either pass a local copy with "
            "model.backbone.weights=/path/file (or an http(s) URL), or train from scratch with "
            "model.backbone.pretrained=false, which ends far below the paper's numbers."
        ) from None


def record_source(module: nn.Module, name: str, source: str) -> None:
    module.weights_source = f"{name}: {source}"
    log.info("backbone %s initialised from %s", name, source)


def create_backbone(
    name: str,
    *,
    out_indices: Sequence[int],
    in_channels: int = 3,
    output_stride: int = 32,
    pretrained: bool = False,
    weights: str | None = None,
    multi_grid: Sequence[int] | None = None,
) -> nn.Module:
    """A timm feature extractor returning the feature maps at ``out_indices``.

    ``pretrained=True`` downloads timm's default weights (a connected machine);
    ``weights=/path/file.{pth,safetensors}`` loads a local file instead, for offline machines.
    """
    if output_stride not in (8, 16, 32):
        raise SegtrainError(f"model.backbone.output_stride={output_stride} is not supported; use 8, 16 or 32")
    kwargs = {}
    if weights is not None:
        weights = local_weights(weights)
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    if not timm.is_model(name):
        raise SegtrainError(f"model.backbone.name={name} is not a timm model; see timm.list_models()")

    def build():
        return timm.create_model(
            name,
            features_only=True,
            out_indices=tuple(out_indices),
            in_chans=in_channels,
            output_stride=output_stride,
            pretrained=pretrained,
            **kwargs,
        )

    model = fetch_pretrained(name, build) if pretrained and weights is None else build()
    if weights is not None:
        source = f"the file {weights}"
    elif pretrained:
        tag = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or "timm"
        source = f"ImageNet weights ({tag})"
    else:
        source = RANDOM_INIT
    record_source(model, name, source)
    if multi_grid is not None:
        apply_multi_grid(model, multi_grid)
    #: Input size / feature size of the last stage (DeepLab picks its atrous rates from it).
    model.output_stride = output_stride
    return model


def paper_backbone(
    config: dict | None, *, in_channels: int, out_indices: Sequence[int], **paper: Any
) -> nn.Module:
    """The backbone a model's paper describes (``paper``: its name, output stride, ...), with what
    ``model.backbone`` (``config``) changes: the one prologue of every model on a timm trunk."""
    return create_backbone(in_channels=in_channels, out_indices=out_indices, **{**paper, **(config or {})})


def apply_multi_grid(model: nn.Module, grid: Sequence[int]) -> None:
    """Multi-grid (DeepLab v3, Sec. 3.2): the 3x3 convs of the last stage's blocks get dilation
    ``stage_dilation * grid[i]``."""
    stage = getattr(model, "layer4", None)
    if stage is None or len(stage) != len(grid):
        raise SegtrainError(
            f"model.backbone.multi_grid={list(grid)} needs a ResNet whose last stage has "
            f"{len(grid)} blocks; set model.backbone.multi_grid=null for this backbone"
        )
    # timm gives a dilated stage's first block the previous stage's dilation; the stage's own
    # dilation is on its later blocks.
    stage_dilation = stage[-1].conv2.dilation[0]
    for block, unit in zip(stage, grid):
        conv = block.conv2
        rate = stage_dilation * unit
        conv.dilation = (rate, rate)
        conv.padding = (rate, rate)


class VGG16(nn.Module):
    """VGG16's 13 convolutions (Simonyan and Zisserman, ICLR 2015) as a trunk that returns the
    output of every pooling stage, built with torchvision's own layer list so that torchvision's
    ``vgg16`` / ``vgg16_bn`` weights load as they are.

    ``width`` scales every layer's channels (1.0 is the paper's; tests use less).
    ``return_indices``: each stage also returns its max-pool switches and pre-pool size, for the
    unpooling of SegNet and DeconvNet. ``dilated``: DeepLab v1's trunk, with 3x3 pools of stride 2
    (stride 1 for pool4 and pool5) and conv5 at dilation 2, for an output stride of 8.
    """

    def __init__(
        self,
        in_channels: int = 3,
        batch_norm: bool = False,
        return_indices: bool = False,
        dilated: bool = False,
        weights: str | None = None,
        pretrained: bool = False,
        width: float = 1.0,
    ):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        layout = [v if v == "M" else max(1, int(v * width)) for v in cfgs["D"]]
        self.features = make_layers(layout, batch_norm=batch_norm)
        self.return_indices = return_indices
        if in_channels != 3:
            self.features[0] = nn.Conv2d(in_channels, layout[0], 3, padding=1)
        self.pool_positions = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for stage, position in enumerate(self.pool_positions):
            if dilated:
                self.features[position] = nn.MaxPool2d(3, stride=2 if stage < 3 else 1, padding=1)
            elif return_indices:
                self.features[position] = nn.MaxPool2d(2, stride=2, return_indices=True)
        if dilated:
            for module in self.features[self.pool_positions[3] + 1 : self.pool_positions[4]]:
                if isinstance(module, nn.Conv2d):
                    module.dilation, module.padding = (2, 2), (2, 2)
        #: Output channels of the five stages: 64, 128, 256, 512, 512 at width 1 (tests use less).
        self.stage_channels = [layout[i - 1] for i, v in enumerate(layout) if v == "M"]
        #: torchvision's fc6/fc7 (``classifier.0`` / ``classifier.3``) when weights were loaded, for
        #: the models that turn them into convolutions (FCN, DeconvNet).
        self.classifier_state: dict | None = None
        name = "vgg16_bn" if batch_norm else "vgg16"
        if weights is not None or pretrained:
            self.load_torchvision_weights(weights, name)
        else:
            self.initialize()
            record_source(self, name, RANDOM_INIT)

    def initialize(self) -> None:
        """torchvision's initialisation of a VGG trained from scratch (He et al. 2015, fan-out): PyTorch's
        default conv initialisation shrinks the signal at every one of the 13 layers, and an unnormalised VGG
        then hardly trains."""
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def load_torchvision_weights(self, weights: str | None, name: str) -> None:
        import torch
        import torchvision

        if weights is not None:
            weights = local_weights(weights)
            state = torch.load(weights, map_location="cpu", weights_only=True)
            record_source(self, name, f"the file {weights}")
        else:
            enum = torchvision.models.get_model_weights(name).DEFAULT
            state = fetch_pretrained(name, lambda: enum.get_state_dict(progress=False))
            record_source(self, name, f"ImageNet weights (torchvision {enum.url})")
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(features)
        self.classifier_state = {k: v for k, v in state.items() if k.startswith("classifier.")}

    def convolutionalize(self, conv: nn.Conv2d, index: int) -> None:
        """Copy torchvision's fully connected classifier layer ``index`` into ``conv`` (FCN, Sec. 3.1)."""
        if self.classifier_state is None:
            return
        weight = self.classifier_state[f"classifier.{index}.weight"]
        conv.weight.data.copy_(weight.view_as(conv.weight))
        conv.bias.data.copy_(self.classifier_state[f"classifier.{index}.bias"])

    def forward(self, x):
        """Per stage: its pooled output, or (pooled, switches, pre-pool size) with ``return_indices``."""
        stages, start = [], 0
        for position in self.pool_positions:
            for module in self.features[start:position]:
                x = module(x)
            size = x.shape[-2:]
            pooled = self.features[position](x)
            if self.return_indices:
                x, indices = pooled
                stages.append((x, indices, size))
            else:
                x = pooled
                stages.append(x)
            start = position + 1
        return stages
