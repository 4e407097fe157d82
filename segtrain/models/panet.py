"""PANet: Mask R-CNN with a shorter path from the low-level features to the heads.

Liu, Qi, Qin, Shi, Jia. "Path Aggregation Network for Instance Segmentation", CVPR 2018. Three changes to
Mask R-CNN, each switchable so that its gain can be measured:

- bottom-up path augmentation (Sec. 3.1): N2 = P2; N(i+1) = conv3x3(P(i+1) + conv3x3/stride 2(N(i))), 256
  channels, each conv followed by ReLU; the heads read N2-N5 instead of P2-P5;
- adaptive feature pooling (Sec. 3.2): every RoI is pooled from every level; a separate first layer per
  level (fc1 of the box head, conv1 of the mask head), then element-wise max fusion;
- fully-connected fusion (Sec. 3.4): from the mask head's conv3, a class-agnostic branch (conv 256, conv
  128, fc to 28x28, then ReLU as the authors' code has it) whose mask is added to every class's mask logits.

``group_norm=True`` puts GroupNorm (32 groups) after every conv of the bottom-up path and the mask head, as
the authors' GN configurations do; their box head is then 4 convs + 1 fc, which segtrain does not build
(the box head stays Mask R-CNN's two fc layers).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import mask_rcnn
from torchvision.ops import roi_align

from segtrain.models.blocks import ConvReLU
from segtrain.models.mask_rcnn import MaskRCNN


class PathStep(nn.Module):
    """One step up the bottom-up path: N(i+1) = conv3x3(P(i+1) + conv3x3/stride 2(N(i)))."""

    def __init__(self, channels: int, group_norm: bool = False):
        super().__init__()
        self.downsample = ConvReLU(channels, channels, stride=2, group_norm=group_norm)
        self.fuse = ConvReLU(channels, channels, group_norm=group_norm)

    def forward(self, previous: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        down = self.downsample(previous)
        # Odd sizes halve with flooring on one path and ceiling on the other: align to the lateral map.
        down = down[..., : lateral.shape[-2], : lateral.shape[-1]]
        down = F.pad(down, [0, lateral.shape[-1] - down.shape[-1], 0, lateral.shape[-2] - down.shape[-2]])
        return self.fuse(lateral + down)


class BottomUpPath(nn.Module):
    """FPN levels "0".."3" (P2-P5) in, N2-N5 out under the same names, and "pool" (N6, a stride-2
    subsample of N5, for the largest anchors as FPN's P6)."""

    def __init__(self, fpn: nn.Module, levels: int = 4, group_norm: bool = False):
        super().__init__()
        self.fpn = fpn
        self.out_channels = fpn.out_channels
        self.names = [str(level) for level in range(levels)]
        self.steps = nn.ModuleList(PathStep(self.out_channels, group_norm) for _ in range(levels - 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pyramid = self.fpn(x)
        previous = pyramid[self.names[0]]
        outputs = OrderedDict([(self.names[0], previous)])
        for index, step in enumerate(self.steps):
            previous = step(previous, pyramid[self.names[index + 1]])
            outputs[self.names[index + 1]] = previous
        outputs["pool"] = F.max_pool2d(previous, 1, 2)
        return outputs


class AllLevelsRoIAlign(nn.Module):
    """RoIAlign of every box from every level (FPN pools each box from one level, chosen by its size):
    [boxes, levels, channels, size, size]."""

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int = 2):
        super().__init__()
        self.featmap_names = featmap_names
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        largest = 1
        for height, width in image_shapes:
            largest = max(largest, height, width)
        pooled = []
        for name in self.featmap_names:
            level = features[name]
            # Each level's stride is a power of two; the ratio of sizes only approximates it.
            ratio = float(max(level.shape[-2], level.shape[-1])) / float(largest)
            scale = 2.0 ** float(torch.tensor(ratio).log2().round())
            pooled.append(
                roi_align(level, boxes, self.output_size, scale, self.sampling_ratio, aligned=False)
            )
        return torch.stack(pooled, dim=1)


class AdaptiveBoxHead(nn.Module):
    """fc1 per level, max over levels, fc2 (the two 1024-d layers of Mask R-CNN's box head)."""

    def __init__(self, in_features: int, levels: int, representation_size: int = 1024):
        super().__init__()
        self.fc1 = nn.ModuleList(nn.Linear(in_features, representation_size) for _ in range(levels))
        self.fc2 = nn.Linear(representation_size, representation_size)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        per_level = []
        for index, fc in enumerate(self.fc1):
            per_level.append(fc(pooled[:, index].flatten(1)))
        return F.relu(self.fc2(F.relu(torch.stack(per_level).amax(0))))


class AdaptiveMaskHead(nn.Module):
    """conv1 per level, max over levels, conv2-conv4 (3x3, 256 channels). With ``fc_fusion`` it also
    runs the fc branch from conv3 and returns its 28x28 mask packed behind conv4's channels, as four
    14x14 channels (pixel_unshuffle): torchvision's RoIHeads passes one tensor from head to predictor."""

    def __init__(
        self, channels: int, levels: int, convs: int = 4, fc_fusion: bool = True, group_norm: bool = False
    ):
        super().__init__()
        self.conv1 = nn.ModuleList(ConvReLU(channels, channels, group_norm=group_norm) for _ in range(levels))
        self.convs = nn.ModuleList(
            ConvReLU(channels, channels, group_norm=group_norm) for _ in range(convs - 1)
        )
        self.fc_fusion = fc_fusion
        self.fc_branch = (
            nn.Sequential(
                ConvReLU(channels, channels, group_norm=group_norm),
                ConvReLU(channels, channels // 2, group_norm=group_norm),
                nn.Flatten(),
                nn.Linear(channels // 2 * 14 * 14, 28 * 28),
                nn.ReLU(inplace=True),
            )
            if fc_fusion
            else nn.Identity()
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.dim() == 4:  # pooled from one level (adaptive_pooling=false)
            pooled = pooled.unsqueeze(1)
        per_level = []
        for index, conv in enumerate(self.conv1):
            per_level.append(conv(pooled[:, index]))
        x = torch.stack(per_level).amax(0)
        branch_input = x
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index == len(self.convs) - 2:  # conv3
                branch_input = x
        if not self.fc_fusion:
            return x
        fc_mask = self.fc_branch(branch_input).view(-1, 1, 28, 28)
        return torch.cat([x, F.pixel_unshuffle(fc_mask, 2)], dim=1)


class FusedMaskPredictor(mask_rcnn.MaskRCNNPredictor):
    """Mask R-CNN's deconvolution and per-class 1x1 conv, plus the fc branch's class-agnostic mask."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(channels, channels, num_classes)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, fc_mask = x[:, : self.channels], F.pixel_shuffle(x[:, self.channels :], 2)
        return self.mask_fcn_logits(F.relu(self.conv5_mask(features))) + fc_mask


class PANet(MaskRCNN):
    """Mask R-CNN (``segtrain.models.mask_rcnn``, same arguments and defaults) with PANet's three
    switchable changes."""

    def __init__(
        self,
        num_classes: int = 91,
        bottom_up_path: bool = True,
        adaptive_pooling: bool = True,
        fc_fusion: bool = True,
        group_norm: bool = False,
        **mask_rcnn_arguments,
    ):
        super().__init__(num_classes, **mask_rcnn_arguments)
        channels = self.backbone.out_channels
        if bottom_up_path:
            self.backbone = BottomUpPath(self.backbone, group_norm=group_norm)
        heads = self.roi_heads
        levels = ["0", "1", "2", "3"]
        mask_channels = heads.mask_predictor.conv5_mask.in_channels
        if adaptive_pooling:
            representation = heads.box_predictor.cls_score.in_features
            heads.box_roi_pool = AllLevelsRoIAlign(levels, 7)
            heads.box_head = AdaptiveBoxHead(channels * 7 * 7, len(levels), representation)
            heads.mask_roi_pool = AllLevelsRoIAlign(levels, 14)
            heads.mask_head = AdaptiveMaskHead(
                channels, len(levels), fc_fusion=fc_fusion, group_norm=group_norm
            )
            mask_channels = channels
        elif fc_fusion or group_norm:
            heads.mask_head = AdaptiveMaskHead(channels, 1, fc_fusion=fc_fusion, group_norm=group_norm)
            mask_channels = channels
        if fc_fusion:
            heads.mask_predictor = FusedMaskPredictor(mask_channels, num_classes)
        elif mask_channels != heads.mask_predictor.conv5_mask.in_channels:
            heads.mask_predictor = mask_rcnn.MaskRCNNPredictor(mask_channels, mask_channels, num_classes)
