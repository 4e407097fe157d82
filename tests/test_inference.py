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
