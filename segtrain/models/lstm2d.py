"""2D-LSTM scene labelling.

Byeon, Breuel, Raue, Liwicki. "Scene Labeling with LSTM Recurrent Neural Networks", CVPR 2015.
The image is cut into non-overlapping blocks (3x3 pixels: a 27-value input per block). Each 2D-LSTM
layer runs four sweeps, one from each corner, and sums them. A cell at (i, j) reads the states of its
two predecessors, (i-1, j) and (i, j-1) in its sweep's direction, and has one forget gate for each:

    c = f_up * c_up + f_left * c_left + i * g,    h = o * tanh(c).

2D-LSTM layers alternate with feed-forward tanh layers that each read a 2x2 block of the layer below
(subsampling), and the last 2D-LSTM layer feeds a per-block softmax. The logits of each block are
upsampled bilinearly to the input's pixels.

Sizes: input blocks 3x3, 2D-LSTM layers of 25, 50 and 150 units, tanh layers of 30 and 120 units on
2x2 blocks, as we read the paper's network description for Stanford Background; the layer list is a
config key (``lstm_channels``, ``hidden_channels``).

A cell depends on its two predecessors only, so every cell of one anti-diagonal (i + j = t) can be
computed at once from the diagonal before it: a sweep is H + W - 1 vectorised steps, not H x W cell
updates, and all four directions run in the same steps. The image is skewed so that each anti-diagonal
is one column (row i shifted right by i), which is a pad and a reshape and so stays dynamic in ONNX.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.errors import SegtrainError
from segtrain.models.blocks import pad_to_multiple

#: Sweep directions as the flips that turn each into the top-left to bottom-right sweep.
FLIPS = ((), (3,), (2,), (2, 3))


def skew(x: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [..., H, H + W - 1] with row i shifted right by i (zeros elsewhere): column t
    holds the anti-diagonal i + j = t."""
    *lead, height, width = x.shape
    diagonals = height + width - 1
    flat = F.pad(x, (0, height)).flatten(-2)
    return flat[..., : height * diagonals].reshape(*lead, height, diagonals)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of ``skew``."""
    *lead, height, diagonals = x.shape
    flat = F.pad(x.flatten(-2), (0, height))
    return flat.reshape(*lead, height, diagonals + 1)[..., :width]


def _diagonal_sweep(
    gates_in: torch.Tensor, valid: torch.Tensor, recurrent: torch.Tensor, hidden: int
) -> torch.Tensor:
    """The recurrence over anti-diagonals. ``gates_in`` [B, D, 5*hidden, H, T]: the input's share of the
    gates, skewed; ``valid`` [H, T]: which skewed cells are pixels; ``recurrent`` [D, 5*hidden,
    2*hidden]: each direction's weights on (h_up, h_left). Returns the hidden states, skewed.

    Scripted so that the loop over the H + W - 1 diagonals stays a loop in TorchScript and ONNX, where
    image sizes vary."""
    batch, directions, _, height, diagonals = gates_in.shape
    h = gates_in.new_zeros(batch, directions, hidden, height)
    c = gates_in.new_zeros(batch, directions, hidden, height)
    states = []
    for t in range(diagonals):
        # On the previous diagonal, cell (i, t-1-i) is the left neighbour of (i, t-i) and cell
        # (i-1, t-i) its upper one: the same state shifted down a row.
        h_up = F.pad(h, [1, 0])[..., :height]
        c_up = F.pad(c, [1, 0])[..., :height]
        gates = gates_in[..., t] + torch.einsum("dgk,bdkh->bdgh", recurrent, torch.cat([h_up, h], 2))
        i, f_up, f_left, o, g = gates.chunk(5, 2)
        mask = valid[:, t]
        c = (torch.sigmoid(f_up) * c_up + torch.sigmoid(f_left) * c + torch.sigmoid(i) * torch.tanh(g)) * mask
        h = torch.sigmoid(o) * torch.tanh(c) * mask
        states.append(h)
    return torch.stack(states, -1)


with warnings.catch_warnings():
    # TorchScript is deprecated, but scripting is what keeps this loop a loop in the exported graph
    # (tracing and torch.export unroll it for one image size).
    warnings.simplefilter("ignore", FutureWarning)
    diagonal_sweep = torch.jit.script(_diagonal_sweep)


class LSTM2d(nn.Module):
    """One 2D-LSTM layer: four directional sweeps with their own weights, summed."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        directions = len(FLIPS)
        self.input_weight = nn.Parameter(torch.empty(directions, 5 * hidden, in_channels))
        self.bias = nn.Parameter(torch.zeros(directions, 5 * hidden))
        self.recurrent = nn.Parameter(torch.empty(directions, 5 * hidden, 2 * hidden))
        bound = hidden**-0.5
        nn.init.uniform_(self.input_weight, -bound, bound)
        nn.init.uniform_(self.recurrent, -bound, bound)
        with torch.no_grad():
            # Forget gates start open (bias 1), as is usual for LSTMs.
            self.bias[:, hidden : 3 * hidden] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        oriented = torch.stack([x.flip(flip) if flip else x for flip in FLIPS], 1)
        gates_in = torch.einsum("dgc,bdchw->bdghw", self.input_weight, oriented)
        gates_in = gates_in + self.bias[None, :, :, None, None]
        valid = skew(x.new_ones(height, width))
        states = unskew(diagonal_sweep(skew(gates_in), valid, self.recurrent, self.hidden), width)
        return sum((states[:, d].flip(flip) if flip else states[:, d]) for d, flip in enumerate(FLIPS))


class SceneLabelingLSTM(nn.Module):
    """Input blocks, then 2D-LSTM layers (``lstm_channels``) alternating with tanh layers over 2x2 blocks
    (``hidden_channels``, one fewer), then a per-block classifier."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        block_size: int = 3,
        lstm_channels: Sequence[int] = (25, 50, 150),
        hidden_channels: Sequence[int] = (30, 120),
        hidden_block_size: int = 2,
    ):
        super().__init__()
        if len(hidden_channels) != len(lstm_channels) - 1:
            raise SegtrainError(
                f"model.hidden_channels={list(hidden_channels)} must have one entry fewer than "
                f"model.lstm_channels={list(lstm_channels)}: a tanh layer sits between two 2D-LSTM layers"
            )
        self.block_size = block_size
        self.hidden_block_size = hidden_block_size
        layers: list[nn.Module] = []
        channels = in_channels * block_size**2
        for index, hidden in enumerate(lstm_channels):
            layers.append(LSTM2d(channels, hidden))
            channels = hidden
            if index < len(hidden_channels):
                # A tanh unit reads a whole 2x2 block of the 2D-LSTM layer below: a stride-2 2x2 conv.
                layers += [
                    nn.Conv2d(channels, hidden_channels[index], hidden_block_size, stride=hidden_block_size),
                    nn.Tanh(),
                ]
                channels = hidden_channels[index]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        #: Pixels per output block along each side.
        self.stride = block_size * hidden_block_size ** len(hidden_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = F.pixel_unshuffle(pad_to_multiple(x, self.stride), self.block_size)
        logits = self.classifier(self.layers(blocks))
        padded_size = [logits.shape[-2] * self.stride, logits.shape[-1] * self.stride]
        upsampled = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        return upsampled[..., : x.shape[-2], : x.shape[-1]]
