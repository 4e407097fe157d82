"""Speed of zoo III's recurrent and graph parts against convolutions of a similar size (benchmarks/models.md).

    python scripts/bench_recurrent_speed.py [--size 128] [--batch 2] [--repeats 5]

Rows, each a training step (forward + backward) on this machine's CPU:
- one 2D-LSTM layer swept along anti-diagonals (segtrain), the same layer cell by cell in Python (the
  recurrence as written, at a smaller size since it is slow), and a 3x3 conv layer of about as many weights;
- the 2D-LSTM network (``model=lstm2d``) against a plain conv stack of about as many weights at the same
  input size;
- ReSeg's two ReNet layers against two 3x3 conv layers of about as many weights, on its stride-4 features;
- the Graph LSTM's two layers (``model=graph_lstm``) for a number of superpixels, against the rest of the
  network.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from segtrain.data.datasets.shapes import Shapes
from segtrain.models.graph_lstm import GraphLSTMNet, neighbours
from segtrain.models.lstm2d import LSTM2d, SceneLabelingLSTM
from segtrain.models.reseg import ReNetLayer


def step_ms(module: nn.Module, *inputs: torch.Tensor, repeats: int) -> float:
    """Median milliseconds of forward + backward."""
    times = []
    for index in range(repeats + 1):
        started = time.perf_counter()
        out = module(*inputs)
        (out["out"] if isinstance(out, dict) else out).float().square().mean().backward()
        if index:  # the first run warms up
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class CellByCell(nn.Module):
    """``LSTM2d``'s weights, run one cell at a time (the recurrence as the paper writes it)."""

    def __init__(self, layer: LSTM2d):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from tests.test_recurrent_models import cell_by_cell

        return cell_by_cell(self.layer, x)


class GraphLayers(nn.Module):
    """A Graph LSTM network's layers over fixed superpixels, in a random update order."""

    def __init__(self, graph: GraphLSTMNet, superpixels: torch.Tensor, nodes: int):
        super().__init__()
        self.graph = graph
        self.order = torch.argsort(torch.rand(superpixels.shape[0], nodes), dim=1)
        self.index, mask = neighbours(superpixels, nodes)
        self.weights = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1)

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        return self.graph.propagate(node_features, self.order, self.index, self.weights)


def conv_stack(channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in zip(channels, channels[1:]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    rows = []

    layer = LSTM2d(27, 25)
    blocks = torch.randn(args.batch, 27, args.size // 3, args.size // 3)
    small = torch.randn(args.batch, 27, 12, 12)
    conv = nn.Conv2d(27, 160, 3, padding=1)  # about as many weights as the layer
    rows.append(
        (
            "2D-LSTM layer, anti-diagonal sweeps",
            parameters(layer),
            tuple(blocks.shape),
            step_ms(layer, blocks, repeats=args.repeats),
        )
    )
    rows.append(
        (
            "2D-LSTM layer, cell by cell (Python loop)",
            parameters(layer),
            tuple(small.shape),
            step_ms(CellByCell(layer), small, repeats=1),
        )
    )
    rows.append(
        (
            "2D-LSTM layer, anti-diagonal sweeps",
            parameters(layer),
            tuple(small.shape),
            step_ms(layer, small, repeats=args.repeats),
        )
    )
    rows.append(
        ("3x3 conv layer", parameters(conv), tuple(blocks.shape), step_ms(conv, blocks, repeats=args.repeats))
    )

    image = torch.randn(args.batch, 3, args.size, args.size)
    lstm_net = SceneLabelingLSTM(8)
    widths = [3, 96, 192, 288, 256, 8]
    convs = conv_stack(widths)
    rows.append(
        (
            "model=lstm2d (paper sizes)",
            parameters(lstm_net),
            tuple(image.shape),
            step_ms(lstm_net, image, repeats=args.repeats),
        )
    )
    rows.append(
        (
            f"conv stack {widths}",
            parameters(convs),
            tuple(image.shape),
            step_ms(convs, image, repeats=args.repeats),
        )
    )

    features = torch.randn(args.batch, 256, args.size // 4, args.size // 4)
    renet = nn.Sequential(ReNetLayer(256, 100), ReNetLayer(200, 100))
    conv_pair = conv_stack([256, 176, 200])
    rows.append(
        (
            "ReSeg's two ReNet layers",
            parameters(renet),
            tuple(features.shape),
            step_ms(renet, features, repeats=args.repeats),
        )
    )
    rows.append(
        (
            "two 3x3 conv layers",
            parameters(conv_pair),
            tuple(features.shape),
            step_ms(conv_pair, features, repeats=args.repeats),
        )
    )

    picture = Shapes("train", image_size=args.size)[0]["image"][None].float().expand(args.batch, -1, -1, -1)
    for segments in (100, 400):
        graph = GraphLSTMNet(
            8,
            hidden=128,
            fc_channels=256,
            superpixels={"n_segments": segments, "compactness": 10.0},
            backbone={"width": 0.25},
        )
        superpixels = graph.superpixels_of(picture)
        nodes = int(superpixels.max()) + 1
        layers = GraphLayers(graph, superpixels, nodes)
        node_features = torch.randn(args.batch, nodes, 256)
        rows.append(
            (
                f"Graph LSTM's 2 layers, {nodes} superpixels",
                parameters(graph.graph),
                (args.batch, nodes, 256),
                step_ms(layers, node_features, repeats=args.repeats),
            )
        )
        rows.append(
            (
                "  model=graph_lstm (1/4 width), all of it",
                parameters(graph),
                tuple(picture.shape),
                step_ms(graph, picture, superpixels, repeats=args.repeats),
            )
        )

    print(f"threads {torch.get_num_threads()}, forward + backward, median of {args.repeats}")
    print("| part | parameters | input | ms per step |")
    print("|---|---|---|---|")
    for name, count, shape, ms in rows:
        print(f"| {name} | {count:,} | {shape} | {ms:.1f} |")


if __name__ == "__main__":
    main()
