"""Every trainable parameter of every model learns: after one forward and backward on a tiny input, each
has a non-zero gradient, except those listed in ``DEAD_AT_START`` with their reasons. A parameter that never
receives a gradient is a part of the paper that the model only seems to have (the Graph LSTM's own-state
weights were one, until issue 23). The semantic models run at odd sizes and answer at the input's size."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from segtrain.models.adversarial import ARCHITECTURES
from segtrain.models.graph_lstm import GraphLSTMNet
from segtrain.models.mask_rcnn import MaskRCNN
from segtrain.models.masklab import MaskLab
from segtrain.models.panet import PANet
from segtrain.models.panoptic_fpn import PanopticFPN
from segtrain.models.text_objseg import TextObjSeg
from segtrain.models.vnet import VNet
from segtrain.tasks.semantic.adversarial import Adversary
from tests.test_instances import TINY, _targets
from tests.test_model_zoo import ODD_SIZES, SIZES, ZOO
from tests.test_recurrent_models import shapes_image
from tests.test_referring import TINY_MODEL, VOCABULARY

#: Parameters with a zero gradient at the first step, and why that is right.
DEAD_AT_START = {
    # b13 (label context) starts at zero, so that the full network starts from the unary's output; b12
    # reaches the output only through b13 and gets its first gradient at the second step. The paper's
    # staged schedule trains b12 alone before b13 (stage "local").
    "dpn": {"mrf.local"},
    # The paper starts the position attention's scale (alpha) at zero, so that the module starts as the
    # identity; its query, key and value convs get their first gradient once alpha has moved.
    "danet": {
        f"position.1.{conv}.{kind}" for conv in ("query", "key", "value") for kind in ("weight", "bias")
    },
}


def weighted(*outputs: torch.Tensor) -> torch.Tensor:
    # Random weights per element: a plain sum would give a softmax-invariant direction zero gradient.
    return sum((torch.randn_like(t) * t).mean() for t in outputs)


def semantic_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    logits, aux = (out["out"], out.get("aux", [])) if isinstance(out, dict) else (out, [])
    # Auxiliary outputs may be smaller: the loss subsamples the labels to them.
    assert logits.shape[0] == x.shape[0] and logits.shape[2:] == x.shape[2:]
    return weighted(logits, *aux)


def instance_loss(model: nn.Module) -> torch.Tensor:
    images = [torch.rand(3, 64, 80), torch.rand(3, 71, 66)]
    return sum(model(images, _targets(images)).values())


def panoptic_loss(model: nn.Module) -> torch.Tensor:
    images = [torch.rand(3, 64, 80), torch.rand(3, 71, 66)]
    targets = _targets(images)
    for target, image in zip(targets, images):
        target["semantic"] = torch.randint(0, 3, image.shape[-2:], dtype=torch.uint8)  # other + 2 stuff
    return sum(model(images, targets).values())


def zoo_case(name: str):
    return ZOO[name], lambda model: semantic_loss(model, torch.randn(2, 3, *SIZES.get(name, ODD_SIZES)[0]))


CASES = {
    **{name: zoo_case(name) for name in ZOO},
    "graph_lstm": (
        lambda: GraphLSTMNet(
            4, hidden=8, fc_channels=16, superpixels={"n_segments": 30}, backbone={"width": 0.0625}
        ),
        # An image with regions: SLIC on noise may find too few superpixels to have neighbours.
        lambda model: semantic_loss(model, shapes_image()),
    ),
    "vnet": (
        lambda: VNet(3, 1, base_channels=4),
        lambda model: semantic_loss(model, torch.randn(1, 1, 21, 27, 19)),
    ),
    "mask_rcnn": (lambda: MaskRCNN(**TINY, mask_channels=32), instance_loss),
    "panet": (lambda: PANet(**TINY, mask_channels=32), instance_loss),
    "panet_group_norm": (lambda: PANet(**TINY, mask_channels=32, group_norm=True), instance_loss),
    "masklab": (lambda: MaskLab(**TINY, head_channels=16, refine_channels=16), instance_loss),
    "panoptic_fpn": (
        lambda: PanopticFPN(
            **{**TINY, "num_classes": 4}, num_things=2, semantic_channels=32, mask_channels=32
        ),
        panoptic_loss,
    ),
    "text_objseg": (
        lambda: TextObjSeg(VOCABULARY, **TINY_MODEL),
        lambda model: weighted(model(torch.randn(2, 3, 45, 71), torch.tensor([[0, 2, 3, 4], [2, 3, 4, 5]]))),
    ),
    **{
        f"discriminator_{architecture}_{kind}": (
            lambda architecture=architecture, kind=kind: Adversary(
                4, input=kind, architecture=architecture, width=0.125
            ),
            lambda adversary: weighted(
                adversary.logits(torch.randn(2, 3, 48, 64), torch.softmax(torch.randn(2, 4, 48, 64), 1))
            ),
        )
        for architecture in ARCHITECTURES
        for kind in ("basic", "product")
    },
}


def start_zero_gammas_at_one(model: nn.Module) -> None:
    """timm's ResNets start each residual block's last BatchNorm gamma at zero (Goyal et al. 2017), which
    leaves the block's other weights without a gradient until that gamma moves. A trained or pretrained
    trunk has them non-zero; so does the test, to check the weights behind them."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            if not module.weight.any():
                nn.init.ones_(module.weight)


@pytest.mark.parametrize("name", CASES)
def test_every_trainable_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    build, loss_of = CASES[name]
    model = build().train()
    start_zero_gammas_at_one(model)
    loss_of(model).backward()
    dead = {
        parameter_name
        for parameter_name, parameter in model.named_parameters()
        if parameter.requires_grad and (parameter.grad is None or not parameter.grad.any())
    }
    assert dead == DEAD_AT_START.get(name, set())


def test_every_model_config_has_a_gradient_case():
    """A new model config without a case here fails: its target class must be built above."""
    built = {type(build()).__qualname__ for build, _ in CASES.values()}
    targets = set()
    for path in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if target:
            targets.add(target.rsplit(".", 1)[1])
    assert targets - built == set()
