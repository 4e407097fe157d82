"""Segmentation from natural language expressions.

Hu, Rohrbach, Darrell. "Segmentation from Natural Language Expressions", ECCV 2016.

- Image: VGG16 FCN-32s up to fc8 (fc6 7x7x4096, fc7 1x1x4096, fc8 1x1x1000, from ImageNet's
  classifier), a 1000-d feature per cell of the stride-32 grid, L2-normalised per cell.
- Expression: a 1000-d word embedding and a 1000-unit LSTM over at most 20 words; its last hidden
  state, L2-normalised.
- Per cell: [image feature, expression vector (tiled), the cell's 8-d spatial coordinates (xmin, ymin,
  xmax, ymax, xcenter, ycenter in [-1, 1], 1/W, 1/H)] -> 1x1 conv 500 + ReLU -> 1x1 conv 1 -> a 32x
  transposed convolution initialised bilinear: one logit per pixel, "is this the object meant".
- Loss: sigmoid cross-entropy with negatives weighted 1/3 (``loss=sigmoid_ce``).

The input is zero-padded to a multiple of 32 and the output cropped back, as segtrain's FCN does, so any
H, W work. ``scale_normalized``: each L2-normalised vector is multiplied by the square root of its
size, so that its entries are of the order of 1, like the spatial map's. The function class is the paper's
(it equals scaling the first 1x1 conv's weights on those channels); from scratch it trains several times
faster (benchmarks/referring.md), so the small default model sets it, while the paper's config keeps plain
unit vectors. ``blind``: the baselines of segtrain's benchmark, the same network with the expression
vector (``expression``) or the image feature (``image``) replaced by zeros. ``freeze_vgg``: VGG16 up to fc8
is not trained, as the authors' code does (its ``fix_convnet``); only the language model, the MLP and the
upsampling learn.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.errors import SegtrainError
from segtrain.models.backbones import VGG16
from segtrain.models.blocks import LearnedUpsample, pad_to_multiple

STRIDE = 32


def spatial_map(features: torch.Tensor) -> torch.Tensor:
    """[B, 8, h, w]: each cell's box (xmin, ymin, xmax, ymax), centre and 1/w, 1/h, in [-1, 1]
    coordinates of the feature grid."""
    batch, _, height, width = features.shape
    xs = torch.arange(width, device=features.device, dtype=features.dtype)
    ys = torch.arange(height, device=features.device, dtype=features.dtype)
    x_min, x_max = xs / width * 2 - 1, (xs + 1) / width * 2 - 1
    y_min, y_max = ys / height * 2 - 1, (ys + 1) / height * 2 - 1
    across = torch.stack([x_min, x_max, (x_min + x_max) / 2, torch.ones_like(xs) / width])
    down = torch.stack([y_min, y_max, (y_min + y_max) / 2, torch.ones_like(ys) / height])
    across = across[:, None, :].expand(-1, height, -1)
    down = down[:, :, None].expand(-1, -1, width)
    grid = torch.stack([across[0], down[0], across[1], down[1], across[2], down[2], across[3], down[3]])
    return grid[None].expand(batch, -1, -1, -1)


class TextObjSeg(nn.Module):
    task = "referring"

    def __init__(
        self,
        vocabulary: Sequence[str] | None,
        in_channels: int = 3,
        embedding_dim: int = 1000,
        lstm_hidden: int = 1000,
        fc_width: int = 4096,
        image_features: int = 1000,
        mlp_hidden: int = 500,
        scale_normalized: bool = False,
        blind: str | None = None,
        freeze_vgg: bool = False,
        backbone: dict | None = None,
    ):
        super().__init__()
        if vocabulary is None:
            raise SegtrainError(
                "model.vocabulary is null: `segtrain train` builds data.vocabulary from the train split's "
                "expressions; eval, predict and export take it from the checkpoint"
            )
        if blind not in (None, "expression", "image"):
            raise SegtrainError(f"model.blind={blind} must be null, expression or image")
        self.blind = blind
        self.scale_normalized = scale_normalized
        self.trunk = VGG16(in_channels, **(backbone or {}))
        pool5_channels = self.trunk.stage_channels[-1]
        self.fc6 = nn.Conv2d(pool5_channels, fc_width, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.fc8 = nn.Conv2d(fc_width, image_features, 1)
        # ImageNet's fc6, fc7 and fc8 (its 1000 class scores are the image feature) when loaded; from
        # scratch, initialised as the trunk is.
        for conv, index in ((self.fc6, 0), (self.fc7, 3), (self.fc8, 6)):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.trunk.convolutionalize(conv, index)
        if freeze_vgg:
            for layer in (self.trunk, self.fc6, self.fc7, self.fc8):
                layer.requires_grad_(False)
        self.embedding = nn.Embedding(len(vocabulary), embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, lstm_hidden, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Conv2d(image_features + lstm_hidden + 8, mlp_hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mlp_hidden, 1, 1),
        )
        self.upsample = LearnedUpsample(1, STRIDE)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(x, dim=1)
        return unit * x.shape[1] ** 0.5 if self.scale_normalized else unit

    def encode_expression(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(tokens))
        return self.normalize(states[:, -1])

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        pool5 = self.trunk(image)[-1]
        fc7 = torch.relu(self.fc7(torch.relu(self.fc6(pool5))))
        return self.normalize(self.fc8(fc7))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        visual = self.encode_image(pad_to_multiple(image, STRIDE))
        text = self.encode_expression(tokens)
        if self.blind == "image":
            visual = torch.zeros_like(visual)
        elif self.blind == "expression":
            text = torch.zeros_like(text)
        tiled = text[:, :, None, None].expand(-1, -1, visual.shape[2], visual.shape[3])
        scores = self.mlp(torch.cat([visual, tiled, spatial_map(visual)], 1))
        return self.upsample(scores)[..., :height, :width]
