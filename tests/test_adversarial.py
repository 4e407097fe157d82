"""Adversarial training (Luc et al. 2016): the discriminator inputs, one backward pass that gives each
network its own gradient, the one-hot-shortcut warning, and training with it on under DDP, resume, eval
and export (which writes the segmenter alone)."""

from __future__ import annotations

import json
import warnings

import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli
from omegaconf import open_dict

from segtrain.config import compose
from segtrain.errors import SegtrainError
from segtrain.tasks.semantic.adversarial import Adversary
from segtrain.tasks.semantic.module import SemanticSegmentation
from segtrain.validation import validate


def _batch(classes: int = 3):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 12, 16)
    mask = torch.randint(0, classes, (2, 12, 16), dtype=torch.uint8)
    mask[0, :2] = 255
    probs = torch.randn(2, classes, 12, 16).softmax(1)
    return image, mask, probs


def test_scaling_softens_the_ground_truth_as_the_paper_says():
    image, mask, probs = _batch()
    truth, predicted = Adversary(3, input="scaling", tau=0.9, width=0.125).label_maps(probs, mask)
    valid = mask != 255
    label = mask.long().where(valid, 0)
    true_class = truth.gather(1, label.unsqueeze(1)).squeeze(1)
    p_true = probs.gather(1, label.unsqueeze(1)).squeeze(1)
    assert torch.allclose(true_class[valid], p_true[valid].clamp(min=0.9))
    # The other classes share the rest in proportion to the prediction: the map still sums to 1.
    assert torch.allclose(truth.sum(1)[valid], torch.ones(()), atol=1e-5)
    other = (label + 1) % 3
    ratio = truth.gather(1, other.unsqueeze(1)) / probs.gather(1, other.unsqueeze(1))
    assert torch.allclose(ratio.squeeze(1)[valid], ((1 - true_class) / (1 - p_true))[valid], atol=1e-4)
    # Ignored pixels are zero in both maps, so they tell the discriminator nothing.
    assert truth[0, :, :2].abs().sum() == 0 and predicted[0, :, :2].abs().sum() == 0


def test_basic_is_one_hot_and_product_multiplies_the_image_by_each_class_map():
    image, mask, probs = _batch()
    basic = Adversary(3, input="basic", width=0.125)
    truth, _ = basic.label_maps(probs, mask)
    assert set(truth.unique().tolist()) == {0.0, 1.0}
    product = Adversary(3, input="product", width=0.125)
    encoded = product.encode(image, probs)
    assert encoded.shape == (2, 9, 12, 16)
    assert torch.allclose(encoded[:, 3 * 1 + 2], image[:, 1] * probs[:, 2])  # channel 1 x class 2
    for architecture in ("stanford", "pascal"):
        for kind in ("basic", "product", "scaling"):
            adversary = Adversary(3, input=kind, architecture=architecture, width=0.125)
            assert adversary.logits(image, probs).shape == (2,)


def test_one_backward_gives_each_network_its_own_gradient():
    """d/dD of (seg + w * term + d_loss) is d/dD of d_loss; d/dS of it is d/dS of (seg + w * term)."""
    image, mask, _ = _batch()
    segmenter = torch.nn.Conv2d(3, 3, 3, padding=1)
    adversary = Adversary(3, input="product", architecture="pascal", width=0.125, weight=0.5)

    def grads(which: str):
        segmenter.zero_grad()
        adversary.zero_grad()
        logits = segmenter(image)
        discriminator, term, _ = adversary.losses(image, logits.softmax(1), mask)
        segmentation = F.cross_entropy(logits, mask.long(), ignore_index=255)
        totals = {
            "all": segmentation + 0.5 * term + discriminator,
            "s": segmentation + 0.5 * term,
            "d": discriminator,
        }
        totals[which].backward()

        def gradients(module):
            return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]

        return gradients(segmenter), gradients(adversary)

    s_all, d_all = grads("all")
    s_only, d_from_s = grads("s")
    s_from_d, d_only = grads("d")
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(s_all, s_only))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(d_all, d_only))
    assert all(g.abs().sum() == 0 for g in d_from_s)  # the segmenter's term leaves the discriminator alone
    assert all(g.abs().sum() == 0 for g in s_from_d)  # and the discriminator's loss the segmenter
    assert any(g.abs().sum() > 0 for g in s_only) and any(g.abs().sum() > 0 for g in d_only)


@pytest.mark.parametrize("kind", ["basic", "product", "scaling"])
def test_segmenter_term_makes_predictions_look_real_to_the_discriminator(kind):
    """The segmenter's term is BCE(a(x, s(x)), 1), the paper's -log a(x, s(x)): one gradient step of the
    segmenter on it raises the discriminator's logit (its belief "ground truth") for the prediction. A flipped
    sign or a target of 0 lowers it."""
    image, mask, _ = _batch()
    torch.manual_seed(1)
    segmenter = torch.nn.Conv2d(3, 3, 3, padding=1)
    adversary = Adversary(3, input=kind, architecture="pascal", width=0.125)
    before = adversary.logits(image, adversary.label_maps(segmenter(image).softmax(1), mask)[1]).detach()
    _, term, _ = adversary.losses(image, segmenter(image).softmax(1), mask)
    term.backward()
    assert all(p.grad is None for p in adversary.parameters())  # the term leaves the discriminator alone
    with torch.no_grad():
        for parameter in segmenter.parameters():
            parameter -= 0.5 * parameter.grad
    after = adversary.logits(image, adversary.label_maps(segmenter(image).softmax(1), mask)[1]).detach()
    assert (after > before).all()


def test_discriminator_learns_to_tell_ground_truth_from_predictions():
    """On a fixed batch, the discriminator's own loss takes its accuracy from chance to (nearly) all right,
    and real maps score higher than predicted ones."""
    image, mask, probs = _batch()
    torch.manual_seed(0)
    adversary = Adversary(3, input="product", architecture="pascal", width=0.125)
    optimizer = torch.optim.Adam(adversary.parameters(), lr=1e-3)
    accuracies = []
    for _ in range(30):
        discriminator_loss, _, accuracy = adversary.losses(image, probs, mask)
        optimizer.zero_grad()
        discriminator_loss.backward()
        optimizer.step()
        accuracies.append(accuracy.item())
    assert accuracies[0] <= 0.75 and accuracies[-1] == 1.0
    truth, predicted = adversary.label_maps(probs, mask)
    assert (adversary.logits(image, truth) > adversary.logits(image, predicted)).all()


def test_warns_when_the_discriminator_stays_at_100_percent(tmp_path):
    cfg = compose(
        "config",
        [*TINY, "adversarial=basic", "adversarial.width=0.125", f"paths.output_dir={tmp_path}", "run_name=r"],
        with_hydra=True,
    )
    with open_dict(cfg):
        cfg.pop("hydra")  # as a run's task sees it
    task = SemanticSegmentation.from_config(cfg)
    task.discriminator_hits += torch.tensor([5.0, 5.0])
    with pytest.warns(UserWarning, match="one-hot against soft.*adversarial=product or adversarial=scaling"):
        task.on_train_epoch_end()
    task.discriminator_hits += torch.tensor([4.5, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 90%: no warning
        task.on_train_epoch_end()


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val is not applied with adversarial"),
        ("trainer.precision=16-mixed", "use trainer.precision=bf16-mixed"),
        ("trainer.accumulate_grad_batches=2", "accumulate_grad_batches>1 is not applied"),
    ],
)
def test_adversarial_refuses_what_it_cannot_honour(override, message):
    cfg = compose("config", ["adversarial=product", override])
    with pytest.raises(SegtrainError, match=message):
        validate(cfg, data_root=False)


@pytest.mark.slow
def test_adversarial_training_under_ddp_resumes_evaluates_and_exports_the_segmenter(tmp_path):
    args = [
        *[arg for arg in TINY if not arg.startswith("data.dataset.lengths")],
        "data.dataset.lengths={train:16,val:6,test:6}",
        "data.num_workers=0",
        "adversarial=product",
        "adversarial.weight=0.1",
        "adversarial.width=0.125",
        "trainer.log_every_n_steps=1",
        "hydra.run.dir=run",
    ]
    result = run_cli(*args, "trainer=ddp_cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"run/ranks/rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["config_sha256"] == ranks[1]["config_sha256"]
    last = tmp_path / "run/checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert len(checkpoint["optimizer_states"]) == 2
    assert any(key.startswith("adversary.discriminator.") for key in checkpoint["state_dict"])
    assert checkpoint["global_step"] == 1  # 16 images / 8 per batch / 2 ranks: one step, counted once
    metrics = (tmp_path / "run/metrics.csv").read_text().splitlines()[0]
    assert "train/discriminator_accuracy" in metrics and "train/discriminator_loss" in metrics

    resumed = run_cli(*args, f"resume={last}", "trainer.max_epochs=2", "hydra.run.dir=resumed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "resumed/val_metrics.json").read_text())["epochs"] == 2
    assert torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3

    evaluated = run_cli("eval", f"ckpt={last}", "data.num_workers=0", "hydra.run.dir=eval", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    # A checkpoint from before the training policy moved next to the semantic task names the old target.
    for config in ("config", "resolved_config"):
        checkpoint["segtrain"][config]["adversarial"]["_target_"] = "segtrain.models.adversarial.Adversary"
    torch.save(checkpoint, tmp_path / "before_the_move.ckpt")
    args = ["eval", "ckpt=before_the_move.ckpt", "data.num_workers=0", "hydra.run.dir=eval_before"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    scores = [
        json.loads((tmp_path / f"{run}/metrics.json").read_text())["mIoU"] for run in ("eval", "eval_before")
    ]
    assert scores[0] == scores[1]
    exported = run_cli("export", f"ckpt={last}", "output=model.onnx", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    graph = onnx.load(tmp_path / "model.onnx").graph
    exported_weights = sum(
        int(torch.tensor(init.dims).prod()) for init in graph.initializer if len(init.dims) > 0
    )
    segmenter = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("model."))
    discriminator = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("adversary."))
    assert exported_weights <= segmenter < segmenter + discriminator
    assert [i.name for i in graph.input] == ["image"]
