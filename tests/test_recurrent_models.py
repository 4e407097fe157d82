"""Zoo III's recurrent and graph models: the 2D-LSTM's anti-diagonal sweep against a cell-by-cell one,
its receptive field, ReSeg's sweeps, and the Graph LSTM's neighbours, update order and superpixels."""

import pytest
import torch

from segtrain.data.datasets.shapes import Shapes
from segtrain.data.superpixels import slic_superpixels
from segtrain.errors import SegtrainError
from segtrain.models.graph_lstm import GraphLSTM, GraphLSTMNet, neighbours
from segtrain.models.lstm2d import FLIPS, LSTM2d, SceneLabelingLSTM, skew, unskew
from segtrain.models.reseg import ReSeg, sweep


def cell_by_cell(layer: LSTM2d, x: torch.Tensor) -> torch.Tensor:
    """The 2D-LSTM as the paper writes it: one cell at a time, each reading (i-1, j) and (i, j-1)."""
    total = 0
    hidden = layer.hidden
    for direction, flip in enumerate(FLIPS):
        oriented = x.flip(flip) if flip else x
        batch, _, height, width = oriented.shape
        h = [[torch.zeros(batch, hidden) for _ in range(width + 1)] for _ in range(height + 1)]
        c = [[torch.zeros(batch, hidden) for _ in range(width + 1)] for _ in range(height + 1)]
        for i in range(1, height + 1):
            for j in range(1, width + 1):
                gates = (
                    oriented[:, :, i - 1, j - 1] @ layer.input_weight[direction].T
                    + layer.bias[direction]
                    + torch.cat([h[i - 1][j], h[i][j - 1]], 1) @ layer.recurrent[direction].T
                )
                gate_in, forget_up, forget_left, gate_out, candidate = gates.chunk(5, 1)
                c[i][j] = (
                    torch.sigmoid(forget_up) * c[i - 1][j]
                    + torch.sigmoid(forget_left) * c[i][j - 1]
                    + torch.sigmoid(gate_in) * torch.tanh(candidate)
                )
                h[i][j] = torch.sigmoid(gate_out) * torch.tanh(c[i][j])
        states = torch.stack([torch.stack(row[1:], -1) for row in h[1:]], -2)
        total = total + (states.flip(flip) if flip else states)
    return total


def test_skew_puts_each_anti_diagonal_in_one_column_and_unskews():
    x = torch.arange(12.0).view(3, 4) + 1
    skewed = skew(x)
    assert skewed.shape == (3, 6)
    for t in range(6):
        on_diagonal = {x[i, t - i].item() for i in range(3) if 0 <= t - i < 4}
        assert set(skewed[:, t].tolist()) - {0.0} == on_diagonal
    assert torch.equal(unskew(skewed, 4), x)


def test_diagonal_sweep_equals_the_cell_by_cell_recurrence():
    torch.manual_seed(0)
    layer = LSTM2d(4, 3)
    x = torch.randn(2, 4, 5, 7)
    assert torch.allclose(layer(x), cell_by_cell(layer, x), atol=1e-5)


def test_every_output_depends_on_every_input():
    torch.manual_seed(0)
    model = SceneLabelingLSTM(4, lstm_channels=(4, 6), hidden_channels=(5,))
    x = torch.randn(1, 3, 37, 45, requires_grad=True)
    model(x)[0, :, 0, 0].sum().backward()
    # The top-left output reaches the bottom-right pixel, and every block of the image.
    assert x.grad[0, :, -1, -1].abs().sum() > 0
    per_block = x.grad[0].abs().sum(0)[:36, :42].view(12, 3, 14, 3).sum((1, 3))
    assert (per_block > 0).all()


def test_lstm2d_layer_list_is_checked():
    with pytest.raises(Exception, match=r"model.hidden_channels=\[30\] must have one entry fewer"):
        SceneLabelingLSTM(3, lstm_channels=(25, 50, 150), hidden_channels=(30,))


def test_reseg_sweeps_read_whole_columns_then_rows():
    torch.manual_seed(0)
    gru = torch.nn.GRU(2, 3, bidirectional=True)
    x = torch.randn(1, 2, 4, 5)
    column = sweep(gru, x, vertical=True)
    # Column 1 of the output is the GRU run down column 1 of the input.
    expected, _ = gru(x[0, :, :, 1].T.unsqueeze(1))
    assert torch.allclose(column[0, :, :, 1], expected[:, 0].T, atol=1e-6)
    row = sweep(gru, x, vertical=False)
    expected, _ = gru(x[0, :, 2, :].T.unsqueeze(1))
    assert torch.allclose(row[0, :, 2, :], expected[:, 0].T, atol=1e-6)


def test_reseg_paper_configuration():
    with torch.device("meta"):
        model = ReSeg(11, backbone={"pretrained": False})
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # VGG16 conv1_1-conv3_3 (1,735,488) frozen; two ReNet layers of 2 x 100 GRUs, 2 x 50 transposed
    # filters and the classifier trained.
    assert frozen == 1_735_488
    assert model.renet[0].vertical.hidden_size == 100 and model.upsample[0].out_channels == 50
    assert trainable == 809_061


def shapes_image(size: int = 64) -> torch.Tensor:
    """A [1, 3, H, W] image with regions for SLIC to find."""
    return Shapes("train", image_size=size)[3]["image"][None].float()


def tiny_graph_lstm() -> GraphLSTMNet:
    return GraphLSTMNet(
        4,
        hidden=8,
        fc_channels=16,
        superpixels={"n_segments": 40, "compactness": 10.0},
        backbone={"width": 0.0625},
    )


def test_neighbours_are_the_touching_superpixels():
    superpixels = torch.tensor([[[0, 0, 1], [2, 2, 1], [2, 3, 3]]])
    index, mask = neighbours(superpixels, 4)
    found = [sorted(index[0, node][mask[0, node]].tolist()) for node in range(4)]
    assert found == [[1, 2], [0, 2, 3], [0, 1, 3], [1, 2]]


def test_graph_lstm_updates_nodes_in_confidence_order():
    torch.manual_seed(0)
    model = tiny_graph_lstm().eval()
    image = shapes_image()
    superpixels = model.superpixels_of(image)
    captured = {}
    model.confidence.register_forward_hook(lambda m, args, out: captured.update(confidence=out))
    model.graph[0].register_forward_pre_hook(lambda m, args: captured.update(order=args[2]))
    with torch.no_grad():
        model(image, superpixels)
    top = captured["confidence"].softmax(1).amax(1)[0]
    # Each superpixel's confidence: the mean over its pixels of their stride-8 cell's top class probability.
    cells = top[torch.arange(64)[:, None] // 8, torch.arange(64)[None, :] // 8]
    nodes = int(superpixels.max()) + 1
    assert nodes > 5
    confidence = torch.stack([cells[superpixels[0] == node].mean() for node in range(nodes)])
    assert captured["order"][0].tolist() == torch.argsort(confidence, descending=True).tolist()


def test_graph_lstm_output_does_not_depend_on_superpixel_ids():
    torch.manual_seed(0)
    model = tiny_graph_lstm().eval()
    image = shapes_image()
    superpixels = model.superpixels_of(image)
    relabelled = torch.randperm(int(superpixels.max()) + 1)[superpixels]
    with torch.no_grad():
        assert torch.allclose(model(image, superpixels), model(image, relabelled), atol=1e-5)
    # Given none, the model computes from its normalised input the superpixels the workers compute from uint8.
    assert torch.equal(model.superpixels_of((image - 100) / 50), superpixels)


def touching(superpixels: list[list[int]]) -> dict[int, set[int]]:
    """Each superpixel's 4-connected neighbours, read pixel by pixel."""
    around = {label: set() for row in superpixels for label in row}
    for i, row in enumerate(superpixels):
        for j, label in enumerate(row):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < len(superpixels) and 0 <= j + dj < len(row):
                    other = superpixels[i + di][j + dj]
                    if other != label:
                        around[label].add(other)
    return around


def paper_graph_lstm(layers, features, order, around):
    """Liang et al. 2016, Eq. 1-2, node by node: layer t+1 visits the nodes in ``order``; a visited
    neighbour offers its layer-t+1 states, the others their layer-t states; the node reads its own layer-t
    states. The first layer starts from zeros."""
    hidden_size = layers[0].hidden
    h = {i: torch.zeros(hidden_size) for i in around}
    m = {i: torch.zeros(hidden_size) for i in around}
    for layer in layers:
        w_u, w_f, w_o, w_c = layer.input.weight.split(hidden_size)
        b_u, b_f, b_o, b_c = layer.input.bias.split(hidden_size)
        n_u, n_o, n_c = layer.mean_neighbour.weight.split(hidden_size)
        n_f = layer.neighbour_forget.weight
        zero = torch.zeros(hidden_size, hidden_size)
        u_u, u_f, u_o, u_c = layer.own.weight.split(hidden_size) if layer.own is not None else (zero,) * 4
        new_h, new_m = {}, {}
        for i in order:
            f = features[i]
            seen_h = [new_h.get(j, h[j]) for j in sorted(around[i])]
            seen_m = [new_m.get(j, m[j]) for j in sorted(around[i])]
            count = max(len(seen_h), 1)
            h_bar = sum(seen_h, torch.zeros(hidden_size)) / count
            g_u = torch.sigmoid(w_u @ f + b_u + u_u @ h[i] + n_u @ h_bar)
            g_o = torch.sigmoid(w_o @ f + b_o + u_o @ h[i] + n_o @ h_bar)
            g_c = torch.tanh(w_c @ f + b_c + u_c @ h[i] + n_c @ h_bar)
            g_f_own = torch.sigmoid(w_f @ f + b_f + u_f @ h[i])
            neighbour_memory = sum(
                (torch.sigmoid(w_f @ f + b_f + n_f @ h_j) * m_j for h_j, m_j in zip(seen_h, seen_m)),
                torch.zeros(hidden_size),
            )
            new_m[i] = neighbour_memory / count + g_f_own * m[i] + g_u * g_c
            new_h[i] = torch.tanh(g_o * new_m[i])
        h, m = new_h, new_m
    return torch.stack([h[i] for i in sorted(h)])


def test_graph_lstm_layers_equal_the_papers_equations_node_by_node():
    torch.manual_seed(0)
    maps = [
        [[0, 0, 1, 1, 4], [2, 2, 1, 3, 4], [2, 5, 5, 3, 3], [6, 6, 5, 3, 3]],
        [[3, 3, 0, 0, 0], [3, 1, 1, 2, 2], [4, 4, 1, 2, 5], [4, 4, 6, 6, 5]],
    ]
    superpixels = torch.tensor(maps)
    nodes = 7
    layers = torch.nn.ModuleList([GraphLSTM(5, 4, first=True), GraphLSTM(5, 4)])
    for parameter in layers.parameters():
        torch.nn.init.normal_(parameter, std=0.7)
    features = torch.randn(2, nodes, 5)
    order = torch.stack([torch.randperm(nodes) for _ in maps])
    index, mask = neighbours(superpixels, nodes)
    weights = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1)
    state = (torch.zeros(2, nodes, 4),) * 2
    with torch.no_grad():
        for layer in layers:
            state = layer(features, state, order, index, weights)
        for item, superpixel_map in enumerate(maps):
            expected = paper_graph_lstm(
                layers, features[item], order[item].tolist(), touching(superpixel_map)
            )
            assert torch.allclose(state[0][item], expected, atol=1e-5)


def test_graph_lstm_feeds_node_features_to_every_layer_and_carries_states():
    model = tiny_graph_lstm().eval()
    seen = []
    for layer in model.graph:
        layer.register_forward_hook(lambda m, args, out: seen.append((args[0], args[1], out)))
    with torch.no_grad():
        model(shapes_image())
    (features_1, state_1, out_1), (features_2, state_2, _) = seen
    assert torch.equal(features_1, features_2) and not state_1[0].any()
    assert state_2[0] is out_1[0] and state_2[1] is out_1[1]


def test_graph_lstm_trains_every_part_at_odd_sizes():
    torch.manual_seed(0)
    model = tiny_graph_lstm().train()
    image = torch.nn.functional.interpolate(shapes_image(), size=(45, 71))
    out = model(image)
    assert out["out"].shape == (1, 4, 45, 71) and out["aux"][0].shape == (1, 4, 45, 71)
    (out["out"].square().mean() + out["aux"][0].square().mean()).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []
    assert model.graph[0].own is None and model.graph[1].own.weight.grad.abs().min() > 0


def test_data_workers_compute_superpixels_for_training_batches():
    from omegaconf import OmegaConf

    from segtrain.data.datamodule import SegDataModule

    shapes = {"_target_": "segtrain.data.datasets.shapes.Shapes", "_partial_": True, "image_size": 32}
    data = {
        "dataset": {**shapes, "lengths": {"train": 4, "val": 2}},
        "classes": ["a"] * 6,
        "palette": [[0, 0, 0]] * 6,
        "batch_size": 2,
        "num_workers": 0,
        "superpixels": {"n_segments": 20, "compactness": 10.0},
    }
    datamodule = SegDataModule.from_config(OmegaConf.create(data))
    batch = next(iter(datamodule.loader("train")))
    assert batch["superpixels"].shape == (2, 32, 32) and batch["superpixels"].min() == 0
    assert "superpixels" not in next(iter(datamodule.loader("val")))


@pytest.mark.slow
def test_graph_lstm_trains_evaluates_and_refuses_export(tmp_path):
    from tests.conftest import checkpoints, run_cli

    run = [
        "model=graph_lstm",
        "model.hidden=8",
        "model.fc_channels=16",
        "+model.backbone.width=0.0625",
        "model.backbone.pretrained=false",
        "model.superpixels.n_segments=20",
        "data.dataset.lengths={train:16,val:4,test:4}",
        "data.dataset.image_size=32",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
    ]
    result = run_cli(*run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = checkpoints(tmp_path / "outputs")[0]
    result = run_cli("eval", f"ckpt={ckpt}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("export", f"ckpt={ckpt}", f"output={tmp_path / 'model.onnx'}", cwd=tmp_path)
    assert result.returncode != 0 and "Graph LSTM cannot be exported" in result.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_graph_lstm_bounds_superpixels_by_image_size_and_refuses_what_cannot_fit():
    """A 64x64 image gets at most one superpixel per stride-8 cell (64), not the 1000 asked for; the
    update's memory estimate follows the measured growth (the square of the node count), and a training
    batch that would not fit is refused with that estimate before it runs."""
    image = shapes_image(64)[0].permute(1, 2, 0).numpy()
    bounded = slic_superpixels(image, n_segments=1000, compactness=10.0, min_pixels=64)
    assert bounded.max() + 1 <= 64
    assert slic_superpixels(image, n_segments=1000, compactness=10.0).max() + 1 > 64
    model = tiny_graph_lstm()
    # 2 tensors of [B, N, H] floats per node step, N steps per layer, 2 layers (hidden=8).
    assert model.training_memory(8, 1000) == 2 * 4 * 2 * 8 * 1000 * 1000 * 8
    model.hidden = 10**9  # an absurd state width: terabytes for one small batch
    with pytest.raises(SegtrainError, match=r"would keep about \d+.\d GiB for backward, more than the"):
        model(shapes_image(64))
    with torch.no_grad():  # inference keeps nothing for backward
        model.eval()
        model.hidden = 8
        assert model(shapes_image(64)).shape == (1, 4, 64, 64)
