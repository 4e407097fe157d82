import pytest
import torch
import torch.nn.functional as F

from segtrain.losses import CEDiceLoss, CrossEntropyLoss, DiceLoss, FocalLoss


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9, 11, requires_grad=True)
    target = torch.randint(0, 4, (2, 9, 11), dtype=torch.uint8)
    target[:, 0] = 255
    return logits, target


def test_cross_entropy_class_weights_and_ignore(batch):
    logits, target = batch
    weights = [1.0, 2.0, 0.5, 3.0]
    ours = CrossEntropyLoss(class_weights=weights)(logits, target)
    ref = F.cross_entropy(logits, target.long(), weight=torch.tensor(weights), ignore_index=255)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_aux_outputs_are_weighted(batch):
    logits, target = batch
    aux = logits.detach() * 2
    loss = CrossEntropyLoss(aux_weight=0.4)
    combined = loss({"out": logits, "aux": [aux]}, target)
    assert combined.item() == pytest.approx(
        loss(logits, target).item() + 0.4 * loss(aux, target).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="aux_weight"):
        CrossEntropyLoss(aux_weight=[0.4, 0.2])({"out": logits, "aux": [aux]}, target)


def test_dice_is_zero_for_perfect_prediction_and_ignores_void():
    target = torch.randint(0, 3, (1, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    target_with_void = target.clone()
    target_with_void[0, 0, 0] = 255
    assert DiceLoss()(logits, target_with_void).item() == pytest.approx(0.0, abs=1e-4)
    assert DiceLoss()(-logits, target).item() > 0.9


def test_focal_reduces_to_cross_entropy_at_gamma_zero(batch):
    logits, target = batch
    ce = F.cross_entropy(logits, target.long(), ignore_index=255)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    assert FocalLoss(gamma=2.0)(logits, target).item() < ce.item()


def test_ce_dice_sums_its_terms_and_backpropagates(batch):
    logits, target = batch
    combo = CEDiceLoss(ce_weight=1.0, dice_weight=0.5)(logits, target)
    expected = CrossEntropyLoss()(logits, target) + 0.5 * DiceLoss()(logits, target)
    assert combo.item() == pytest.approx(expected.item(), rel=1e-6)
    combo.backward()
    assert logits.grad is not None


def test_a_smaller_aux_output_whose_subsampled_labels_are_all_ignored_adds_nothing():
    """Labels subsampled by nearest neighbour to a 2x2 aux output keep pixels (0, 0), (0, 2), (2, 0) and
    (2, 2) of a 4x4 target: ignored there, the aux term is skipped instead of turning the loss into NaN."""
    target = torch.full((1, 4, 4), 255)
    target[0, 1, 1] = 1
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    aux = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = CrossEntropyLoss()({"out": logits, "aux": [aux], "aux_weight": 1.0}, target)
    assert torch.isfinite(loss) and torch.allclose(loss, F.cross_entropy(logits, target, ignore_index=255))
    loss.backward()
    assert aux.grad is None and logits.grad.abs().sum() > 0
