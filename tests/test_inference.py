import math

import pytest
import torch
import torch.nn as nn

from segtrain.inference import predict_probs, sliding_window
from segtrain.schedulers import cosine, poly


def pointwise_model():
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 1).eval()


def test_sliding_window_equals_whole_for_a_pointwise_model():
    model = pointwise_model()
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        for gaussian in (True, False):
            out = sliding_window(model, x, crop_size=(16, 24), stride=(10, 13), gaussian=gaussian)
            assert torch.allclose(out, model(x), atol=1e-5)


def test_sliding_window_pads_inputs_smaller_than_the_window():
    model = pointwise_model()
    x = torch.randn(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(sliding_window(model, x, (16, 16)), model(x), atol=1e-5)


def test_flip_and_multiscale_average_probabilities():
    model = pointwise_model()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        whole = predict_probs(model, x)
        assert torch.allclose(whole.sum(1), torch.ones(2, 32, 48), atol=1e-5)
        # A pointwise model commutes with flips, so flip TTA changes nothing.
        assert torch.allclose(predict_probs(model, x, flip=True), whole, atol=1e-5)
        multi = predict_probs(model, x, mode="slide", crop_size=(16, 16), scales=(0.5, 1.0, 1.5), flip=True)
        assert multi.shape == whole.shape


class WindowRamp(nn.Module):
    """Logits that depend on where a pixel sits in the window it is given: class k scores
    (k + 1) * x[0] + k * (row / height) - k * (column / width). Window placement, flips and rescaling
    all change its output, so only the right computation reproduces them."""

    def forward(self, x):
        height, width = x.shape[-2:]
        rows = torch.arange(height, dtype=x.dtype)[:, None] / height
        columns = torch.arange(width, dtype=x.dtype)[None, :] / width
        return torch.stack([(k + 1) * x[:, 0] + k * rows - k * columns for k in range(3)], 1)


def hand_gaussian(height: int, width: int) -> torch.Tensor:
    """exp(-d^2 / 2 (n / 8)^2) per axis around the window's centre, scaled to peak 1, floored at 1e-3."""
    weight = torch.empty(height, width)
    for i in range(height):
        for j in range(width):
            dy, dx = i - (height - 1) / 2, j - (width - 1) / 2
            weight[i, j] = math.exp(-0.5 * (dy / (height / 8)) ** 2 - 0.5 * (dx / (width / 8)) ** 2)
    return (weight / weight.max()).clamp(min=1e-3)


def test_sliding_window_equals_hand_placed_windows():
    """20x30 input, 12x16 windows, stride 5x7: rows start at 0, 5 and 8 (the last flush with the border),
    columns at 0, 7 and 14; each window's logits weighted by the Gaussian and normalised per pixel."""
    model = WindowRamp()
    x = torch.randn(1, 3, 20, 30)
    for gaussian in (True, False):
        weight = hand_gaussian(12, 16) if gaussian else torch.ones(12, 16)
        total, norm = torch.zeros(1, 3, 20, 30), torch.zeros(20, 30)
        for top in (0, 5, 8):
            for left in (0, 7, 14):
                total[..., top : top + 12, left : left + 16] += (
                    model(x[..., top : top + 12, left : left + 16]) * weight
                )
                norm[top : top + 12, left : left + 16] += weight
        out = sliding_window(model, x, crop_size=(12, 16), stride=(5, 7), gaussian=gaussian)
        assert torch.allclose(out, total / norm, atol=1e-5)
        assert not torch.allclose(out, model(x), atol=1e-2)  # the windows matter for this model


def test_flip_and_scale_tta_equal_their_direct_computation():
    model = WindowRamp()
    x = torch.randn(2, 3, 16, 24)
    direct = model(x).softmax(1)
    flipped = model(x.flip(-1)).flip(-1).softmax(1)
    assert not torch.allclose(direct, flipped, atol=1e-3)
    assert torch.allclose(predict_probs(model, x, flip=True), (direct + flipped) / 2, atol=1e-6)
    half = torch.nn.functional.interpolate(x, size=(8, 12), mode="bilinear", align_corners=False)
    at_half = torch.nn.functional.interpolate(
        model(half), size=(16, 24), mode="bilinear", align_corners=False
    )
    expected = (at_half.softmax(1) + direct) / 2
    assert torch.allclose(predict_probs(model, x, scales=(0.5, 1.0)), expected, atol=1e-6)


def test_poly_and_cosine_are_stepped_per_iteration():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01)
    sched = poly(opt, total_steps=100, power=0.9)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)
    opt = torch.optim.SGD([param], lr=1.0)
    sched = cosine(opt, total_steps=110, warmup_steps=10, warmup_ratio=0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(60):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
