"""Zoo III's recurrent models: the 2D-LSTM's anti-diagonal sweep against a cell-by-cell one, its
receptive field, and ReSeg's sweeps."""

import pytest
import torch

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
