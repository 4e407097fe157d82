"""The dense CRF against a brute-force O(N^2) mean field, and what it does to a noisy labelling."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segtrain.crf import PermutohedralLattice, dense_crf
from tests.conftest import run_cli

PARAMS = {"w1": 4.0, "theta_alpha": 6.0, "theta_beta": 20.0, "w2": 3.0, "theta_gamma": 1.5, "iterations": 5}


def two_region_image(height: int = 14, width: int = 18, seed: int = 0):
    """A bright square on a dark background, and probabilities that are right 70% of the time."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.zeros(height, width, dtype=torch.long)
    truth[3:11, 4:13] = 1
    image = (
        torch.where(truth.bool(), 200.0, 40.0).expand(3, -1, -1)
        + torch.randn(3, height, width, generator=generator) * 8
    )
    noisy = torch.where(torch.rand(height, width, generator=generator) < 0.3, 1 - truth, truth)
    probs = torch.stack([(noisy == k).float() * 0.4 + 0.3 for k in (0, 1)])
    return image.clamp(0, 255), probs / probs.sum(0), truth


def brute_force_crf(probs, image, iterations, w1, theta_alpha, theta_beta, w2, theta_gamma):
    """Mean field with explicit N x N kernels, symmetric normalisation as densecrf 2.2."""
    classes, height, width = probs.shape
    ys, xs = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
    position = torch.stack([xs, ys], -1).reshape(-1, 2)
    colour = image.double().reshape(3, -1).t()

    def normalized(features):
        kernel = torch.exp(-0.5 * torch.cdist(features, features) ** 2)
        norm = kernel.sum(1, keepdim=True).rsqrt()
        return lambda q: norm * (kernel @ (norm * q))

    appearance = normalized(torch.cat([position / theta_alpha, colour / theta_beta], 1))
    smoothness = normalized(position / theta_gamma)
    unary = probs.double().clamp(min=1e-8).log().reshape(classes, -1).t()
    q = unary.softmax(1)
    for _ in range(iterations):
        q = (unary + w1 * appearance(q) + w2 * smoothness(q)).softmax(1)
    return q.t().reshape(classes, height, width).float()


def test_matches_brute_force_mean_field():
    image, probs, _ = two_region_image()
    fast, exact = dense_crf(probs, image, **PARAMS), brute_force_crf(probs, image, **PARAMS)
    assert (fast - exact).abs().max() < 0.03
    assert (fast.argmax(0) == exact.argmax(0)).float().mean() > 0.98


def test_lattice_filter_is_the_gaussian_filter_up_to_normalisation():
    torch.manual_seed(0)
    features = torch.randn(400, 2) * 3
    values = torch.rand(400, 2)
    kernel = torch.exp(-0.5 * torch.cdist(features, features) ** 2)
    ratio = PermutohedralLattice(features).filter(values) / (kernel @ values)
    assert ratio.std() / ratio.mean() < 0.1  # a near-constant factor, which the normalisation removes


def test_crf_cleans_a_noisy_labelling():
    image, probs, truth = two_region_image(seed=1)
    before = (probs.argmax(0) == truth).float().mean()
    after = (dense_crf(probs, image, **PARAMS).argmax(0) == truth).float().mean()
    assert before < 0.8 and after > 0.95


def transitions(mask: np.ndarray) -> int:
    return int((mask[:, 1:] != mask[:, :-1]).sum() + (mask[1:] != mask[:-1]).sum())


@pytest.mark.slow
def test_eval_and_predict_with_crf(trained_run, tmp_path):
    result = run_cli(
        "eval",
        f"ckpt={trained_run['best']}",
        "inference.crf=true",
        "inference.crf_params.iterations=3",
        cwd=trained_run["cwd"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = next(
        path
        for path in (trained_run["cwd"] / "outputs" / "eval").rglob("metrics.json")
        if path.parent.name in result.stdout
    )
    scores = json.loads(metrics.read_text())
    assert 0 < scores["mIoU"] <= 1 and scores["inference"]["crf"] is True
    images = tmp_path / "images"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(images / "a.png")
    masks = {}
    for crf in (False, True):
        out = tmp_path / f"out_{crf}"
        predicted = run_cli(
            "predict",
            f"ckpt={trained_run['best']}",
            f"input={images}",
            f"output={out}",
            f"inference.crf={str(crf).lower()}",
            cwd=trained_run["cwd"],
        )
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        masks[crf] = np.asarray(Image.open(out / "a.png"))
        assert masks[crf].shape == (30, 40)
    # On noise the network's labelling is ragged; the CRF's smoothness kernel evens it out.
    assert (masks[True] != masks[False]).any()
    assert transitions(masks[True]) < transitions(masks[False])
