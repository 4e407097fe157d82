"""Graph LSTM.

Liang, Shen, Feng, Lin, Yan. "Semantic Object Parsing with Graph LSTM", ECCV 2016.

The nodes are SLIC superpixels (``segtrain.data.superpixels``); two superpixels that touch are
neighbours. Over DeepLab-LargeFOV's VGG16 features (stride 8, fc6/fc7):
- a node's feature is the fc7 features averaged over its superpixel;
- a 1x1 conv predicts a confidence map (class scores, supervised with cross-entropy), and the nodes are
  updated in order of their confidence, the most confident first;
- Graph LSTM layers, each a sweep over all nodes in that order. Layer t+1 reads the node features f and
  the states (h_t, m_t) that layer t left; a neighbour already visited in this sweep offers its new state
  (h_{t+1}, m_{t+1}), the others their layer-t state, and each neighbour's memory passes through its own
  adaptive forget gate (Eq. 1-2 of the paper):

      h_bar = mean over neighbours j of h_j
      u = s(W_u f + U_u h_i + N_u h_bar),  o = s(W_o f + U_o h_i + N_o h_bar)
      c = tanh(W_c f + U_c h_i + N_c h_bar),  f_i = s(W_f f + U_f h_i),  f_ij = s(W_f f + N_f h_j)
      m_i' = mean over j of f_ij * m_j + f_i * m_i + u * c,  h_i' = tanh(o * m_i')

  with h_i, m_i the node's own layer-t states. The first layer starts from the LSTM's zero state, so it
  holds no U weights (they would only ever multiply zeros). The paper writes f_ij with h_{j,t}; we give it
  the neighbour's state as this sweep sees it, the same one its memory term m_j takes.
- two Graph LSTM layers; the last one's hidden states are projected back onto the feature grid (each cell
  mixes its superpixels by area), concatenated with fc7, and a 1x1 conv classifies. Cross-entropy goes on
  the output and on the confidence map.

Superpixels come with the training batches from the data workers (``data.superpixels``, which the model
config sets); given none, the model computes the same ones from its input. Hidden size 512 and about 1000
superpixels are the paper's settings as we read them.

Export: the update order is a data-dependent sort followed by one step per superpixel, and SLIC is
scikit-image code, not a torch operator, so neither ONNX nor TorchScript can hold this model; ``export``
says so (``export_error``). Evaluate and predict from the checkpoint.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segtrain.data.superpixels import slic_superpixels
from segtrain.errors import SegtrainError
from segtrain.models.backbones import VGG16
from segtrain.models.blocks import pad_to_multiple, resize_to, with_aux
from segtrain.models.deeplab import fc6_fc7

STRIDE = 8


def cell_areas(superpixels: torch.Tensor, nodes: int, grid: tuple[int, int]) -> torch.Tensor:
    """[B, N, h*w]: the share of each stride-8 cell's pixels that lie in each superpixel (-1: none)."""
    batch, height, width = superpixels.shape
    rows = torch.arange(height, device=superpixels.device) // STRIDE
    columns = torch.arange(width, device=superpixels.device) // STRIDE
    cells = (rows[:, None] * grid[1] + columns[None, :]).expand(batch, -1, -1)
    valid = superpixels >= 0
    index = (superpixels.clamp(min=0) * grid[0] * grid[1] + cells).flatten(1)
    areas = torch.zeros(batch, nodes * grid[0] * grid[1], device=superpixels.device)
    areas.scatter_add_(1, index, valid.flatten(1).float() / STRIDE**2)
    return areas.view(batch, nodes, -1)


def neighbours(superpixels: torch.Tensor, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each node's neighbours (superpixels that touch it, 4-connected) as [B, N, D] indices padded with 0,
    and their [B, N, D] mask."""
    batch = superpixels.shape[0]
    elsewhere = nodes * nodes  # where pixel pairs inside one superpixel are scattered, then dropped
    adjacency = torch.zeros(batch, elsewhere + 1, device=superpixels.device)
    for a, b in (
        (superpixels[:, :, :-1], superpixels[:, :, 1:]),
        (superpixels[:, :-1, :], superpixels[:, 1:, :]),
    ):
        touching = (a != b) & (a >= 0) & (b >= 0)
        for first, second in ((a, b), (b, a)):
            pairs = torch.where(touching, first.clamp(min=0) * nodes + second.clamp(min=0), elsewhere)
            adjacency.scatter_(1, pairs.flatten(1), 1.0)
    adjacency = adjacency[:, :elsewhere].view(batch, nodes, nodes) > 0
    count = adjacency.sum(-1)
    degree = max(int(count.max()), 1)
    ranked = torch.sort(adjacency.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :degree]
    mask = torch.arange(degree, device=superpixels.device) < count[..., None]
    return torch.where(mask, ranked, 0), mask


def gather_nodes(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``states`` [B, N, H] at ``index`` [B, K] -> [B, K, H]. (gather keeps only the index for backward,
    so the per-step copies of the states are freed as the sweep moves on.)"""
    return states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))


class GraphLSTM(nn.Module):
    """One Graph LSTM layer: a sweep over all nodes in the given order, from the previous layer's states.

    ``first``: the layer starts from the zero state and has no weights on the node's own old state."""

    def __init__(self, in_channels: int, hidden: int, first: bool = False):
        super().__init__()
        self.hidden = hidden
        self.input = nn.Linear(in_channels, 4 * hidden)  # u, f, o, c
        self.own = None if first else nn.Linear(hidden, 4 * hidden, bias=False)
        self.mean_neighbour = nn.Linear(hidden, 3 * hidden, bias=False)  # u, o, c
        self.neighbour_forget = nn.Linear(hidden, hidden, bias=False)

    def forward(
        self,
        features: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        order: torch.Tensor,
        neighbour_index: torch.Tensor,
        neighbour_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` [B, N, C], the previous layer's (hidden, memory) [B, N, H] each, ``order`` [B, N],
        each node's neighbours and their weights in its mean [B, N, D] -> this layer's (hidden, memory)."""
        batch = features.shape[0]
        projected = self.input(features)
        # Nodes not yet visited hold the previous layer's states; each visit overwrites one node.
        hidden, memory = state
        rows = torch.arange(batch, device=features.device)
        for step in range(features.shape[1]):
            node = order[:, step]
            around, weights = neighbour_index[rows, node], neighbour_weights[rows, node]
            around_hidden, around_memory = gather_nodes(hidden, around), gather_nodes(memory, around)
            mean_hidden = (weights[..., None] * around_hidden).sum(1)
            w_u, w_f, w_o, w_c = projected[rows, node].chunk(4, 1)
            n_u, n_o, n_c = self.mean_neighbour(mean_hidden).chunk(3, 1)
            forget_each = torch.sigmoid(w_f[:, None] + self.neighbour_forget(around_hidden))
            new_memory = (weights[..., None] * forget_each * around_memory).sum(1)
            if self.own is not None:
                o_u, o_f, o_o, o_c = self.own(hidden[rows, node]).chunk(4, 1)
                w_u, w_o, w_c = w_u + o_u, w_o + o_o, w_c + o_c
                new_memory = new_memory + torch.sigmoid(w_f + o_f) * memory[rows, node]
            new_memory = new_memory + torch.sigmoid(w_u + n_u) * torch.tanh(w_c + n_c)
            new_hidden = torch.tanh(torch.sigmoid(w_o + n_o) * new_memory)
            at = node[:, None, None].expand(-1, 1, self.hidden)
            hidden = hidden.scatter(1, at, new_hidden[:, None])
            memory = memory.scatter(1, at, new_memory[:, None])
        return hidden, memory


class GraphLSTMNet(nn.Module):
    """DeepLab-LargeFOV features, a confidence map, two Graph LSTM layers over SLIC superpixels, and a
    classifier over [fc7, the projected states]."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden: int = 512,
        layers: int = 2,
        fc_channels: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        superpixels: dict | None = None,
        backbone: dict | None = None,
    ):
        super().__init__()
        self.hidden = hidden
        #: SLIC settings (``n_segments``, ``compactness``) for inputs that come without superpixels.
        self.superpixel_options = dict(
            superpixels or {"n_segments": 1000, "compactness": 10.0, "min_pixels": STRIDE**2}
        )
        self.trunk = VGG16(in_channels, dilated=True, **(backbone or {}))
        self.fc = fc6_fc7(self.trunk.stage_channels[-1], fc_channels, fc6_dilation, dropout)
        self.confidence = nn.Conv2d(fc_channels, num_classes, 1)
        self.graph = nn.ModuleList(
            GraphLSTM(fc_channels, hidden, first=index == 0) for index in range(layers)
        )
        self.classifier = nn.Conv2d(fc_channels + hidden, num_classes, 1)

    def superpixels_of(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().float().permute(0, 2, 3, 1).cpu().numpy()
        labels = np.stack([slic_superpixels(image, **self.superpixel_options) for image in images])
        return torch.from_numpy(labels).to(x.device)

    @staticmethod
    def update_order(confidence: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
        """Nodes by descending confidence (each node's mean over its pixels of the top class probability);
        superpixel ids absent from an image come last."""
        covered = areas.sum(-1)
        node_confidence = (areas @ confidence.flatten(1)[..., None])[..., 0] / covered.clamp(min=1e-6)
        node_confidence = torch.where(covered > 0, node_confidence, -1.0)
        return torch.argsort(node_confidence, dim=1, descending=True, stable=True)

    def propagate(
        self,
        node_features: torch.Tensor,
        order: torch.Tensor,
        neighbour_index: torch.Tensor,
        neighbour_weights: torch.Tensor,
    ) -> torch.Tensor:
        """The Graph LSTM layers from the zero state, each reading the node features [B, N, C] and the
        states the layer before it left -> the last layer's hidden states [B, N, H]."""
        state = (node_features.new_zeros(*node_features.shape[:2], self.hidden),) * 2
        for layer in self.graph:
            state = layer(node_features, state, order, neighbour_index, neighbour_weights)
        return state[0]

    def training_memory(self, batch: int, nodes: int) -> int:
        """Bytes the node-by-node update keeps for backward: each of the ``nodes`` steps of each layer
        leaves a new hidden and memory tensor of [batch, nodes, hidden] floats (measured within 15%)."""
        return 2 * 4 * len(self.graph) * batch * nodes * nodes * self.hidden

    def check_memory(self, batch: int, nodes: int, device: torch.device) -> None:
        """Refuses a batch whose update would not fit, before the kernel or CUDA kills the run."""
        needed = self.training_memory(batch, nodes)
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if needed > free:
            raise SegtrainError(
                f"Graph LSTM's update over {nodes} superpixels x batch {batch} (model.hidden={self.hidden}, "
                f"{len(self.graph)} layers) would keep about {needed / 2**30:.1f} GiB for backward, more "
                f"than the {free / 2**30:.1f} GiB free; it grows with the square of the superpixel count. "
                "Lower model.superpixels.n_segments (or raise model.superpixels.min_pixels), "
                "data.batch_size or model.hidden"
            )

    def forward(self, x: torch.Tensor, superpixels: torch.Tensor | None = None):
        if superpixels is None:
            superpixels = self.superpixels_of(x)
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, STRIDE)
        superpixels = F.pad(
            superpixels, (0, padded.shape[-1] - width, 0, padded.shape[-2] - height), value=-1
        )
        features = self.fc(self.trunk(padded)[-1])
        confidence_logits = self.confidence(features)
        grid = tuple(features.shape[-2:])
        nodes = int(superpixels.max()) + 1
        if torch.is_grad_enabled():
            self.check_memory(x.shape[0], nodes, x.device)
        areas = cell_areas(superpixels, nodes, grid)
        node_features = (areas @ features.flatten(2).transpose(1, 2)) / areas.sum(-1, keepdim=True).clamp(
            min=1e-6
        )
        order = self.update_order(confidence_logits.detach().softmax(1).amax(1), areas)
        neighbour_index, neighbour_mask = neighbours(superpixels, nodes)
        # Each neighbour's share of a node's mean, the same in every layer.
        neighbour_weights = neighbour_mask.float() / neighbour_mask.sum(-1, keepdim=True).clamp(min=1)
        states = self.propagate(node_features, order, neighbour_index, neighbour_weights)
        # Each cell takes its superpixels' states, weighted by the share of its pixels they cover.
        projected = (areas.transpose(1, 2) @ states).transpose(1, 2).reshape(x.shape[0], -1, *grid)
        logits = self.classifier(torch.cat([features, projected], 1))
        out = resize_to(logits, padded)[..., :height, :width]
        aux = [resize_to(confidence_logits, padded)[..., :height, :width]] if self.training else []
        return with_aux(self, out, aux, weight=1.0)

    export_error = (
        "Graph LSTM cannot be exported: it computes SLIC superpixels with scikit-image and updates one "
        "superpixel per step in an order sorted from the data, which neither ONNX nor TorchScript can hold. "
        "Evaluate and predict from the checkpoint (segtrain eval / predict ckpt=...)"
    )
