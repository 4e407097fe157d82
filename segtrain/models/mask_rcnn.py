"""Mask R-CNN on a ResNet-FPN trunk, from torchvision's detection components.

He, Gkioxari, Dollar, Girshick. "Mask R-CNN", ICCV 2017. Faster R-CNN's region proposal network and
box head, plus a mask branch: RoIAlign to 7x7 for the box head (two 1024-d fc layers) and to 14x14 for the
mask head (four 3x3 convs of 256 channels and a 2x deconvolution to 28x28), a sigmoid mask per class
trained only on the ground-truth class. 512 RoIs per image are sampled at 1:3 positive:negative; the
shorter image side is resized to 800 (at most 1333 on the longer); BatchNorm of the ImageNet trunk is
frozen, and its stem and first stage are not trained. With torchvision's trunk and 91 classes (COCO's
category ids) this is exactly torchvision's ``maskrcnn_resnet50_fpn``: 44,401,393 parameters.

``variant="v2"`` is torchvision's improved recipe (Li et al., "Benchmarking Detection Transfer Learning
with Vision Transformers", 2021): trainable BatchNorm everywhere, a two-conv RPN head, a 4-conv + fc box
head and a normalised mask head (46,359,409 parameters at 91 classes).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torchvision.models.detection import mask_rcnn

from segtrain.models.detection import IMAGENET_MEAN, IMAGENET_STD, StableSizeTransform, detector_options


class MaskRCNN(mask_rcnn.MaskRCNN):
    """``forward(images: list of float [3,H,W] in 0-1, targets=None)``: the losses while training, else one
    dict per image (boxes xyxy, labels, scores, masks [N,1,H,W] probabilities) at the image's size.

    ``num_classes`` counts the background (label 0). ``backbone``: ``segtrain.models.detection.resnet_fpn``
    arguments.
    """

    task = "instance"

    def __init__(
        self,
        num_classes: int = 91,
        backbone: dict | None = None,
        variant: str = "v1",
        fpn_channels: int = 256,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        representation_size: int = 1024,
        mask_channels: int = 256,
        mask_convs: int = 4,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        box_score_thresh: float = 0.05,
        box_detections_per_img: int = 100,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    ):
        norm = nn.BatchNorm2d if variant == "v2" else None
        super().__init__(
            mask_head=mask_rcnn.MaskRCNNHeads(fpn_channels, [mask_channels] * mask_convs, 1, norm_layer=norm),
            mask_predictor=mask_rcnn.MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
            **detector_options(
                num_classes,
                backbone,
                variant,
                fpn_channels,
                min_size,
                max_size,
                image_mean,
                image_std,
                representation_size,
                box_batch_size_per_image,
                box_positive_fraction,
                box_score_thresh,
                box_detections_per_img,
                anchor_sizes,
            ),
        )
        self.transform = StableSizeTransform(min_size, max_size, list(image_mean), list(image_std))
