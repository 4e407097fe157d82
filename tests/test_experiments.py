"""Every experiment overlay composes, validates, loads a batch of its layout and runs its model on it."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from segtrain.config import compose, config_groups
from segtrain.data.datamodule import build_datamodule
from segtrain.tasks import with_derived
from segtrain.tasks.semantic.task import SemanticTask
from segtrain.validation import validate
from tests.conftest import checkpoints, run_cli
from tests.layouts import (
    make_ade20k_tree,
    make_camvid_tree,
    make_cityscapes_tree,
    make_coco_stuff_tree,
    make_decathlon_tree,
    make_folder_tree,
)

ROOT = Path(__file__).parents[1]
TREES = {
    "camvid": make_camvid_tree,
    "cityscapes": make_cityscapes_tree,
    "ade20k": make_ade20k_tree,
    "coco_stuff": make_coco_stuff_tree,
    "isbi2012": lambda root: make_folder_tree(root, images_dir="image", masks_dir="label", gray=True),
    "folder": make_folder_tree,
}
# Tiny stand-ins for the papers' networks, by model class: the configs stay the papers', the test fast.
TINY_MODELS = {
    "DeepLabV3Plus": [
        "model.backbone.name=resnet18",
        "model.backbone.multi_grid=null",
        "model.backbone.pretrained=false",
    ],
    "UNet": ["model.base_channels=4", "model.depth=2", "model.padding=same"],
    "SegNet": ["+model.backbone.width=0.125", "model.backbone.pretrained=false"],
    "ReSeg": [
        "+model.backbone.width=0.125",
        "model.backbone.pretrained=false",
        "model.hidden=8",
        "model.upsample_channels=8",
    ],
    "PSPNet": ["model.backbone.name=resnet18", "model.backbone.pretrained=false", "model.channels=16"],
    "DANet": ["model.backbone.name=resnet18", "model.backbone.pretrained=false", "model.channels=16"],
    "SemanticFPN": [
        "model.backbone.name=resnet18",
        "model.backbone.pretrained=false",
        "model.fpn_channels=32",
        "model.head_channels=32",  # GroupNorm's 32 groups
    ],
    "SceneLabelingLSTM": ["model.lstm_channels=[4,6]", "model.hidden_channels=[5]"],
    "AttentionToScale": [
        "+model.backbone.width=0.0625",
        "model.backbone.pretrained=false",
        "model.fc_channels=16",
        "model.attention_channels=8",
    ],
    "ReverseAttentionNetwork": ["model.backbone.name=resnet18", "model.backbone.pretrained=false"],
    "GraphLSTMNet": [
        "+model.backbone.width=0.0625",
        "model.backbone.pretrained=false",
        "model.fc_channels=16",
        "model.hidden=8",
        "model.superpixels.n_segments=20",
    ],
}


def compose_experiment(name: str, *overrides: str):
    return compose("config", [f"experiment={name}", *overrides])


EXPERIMENTS = [
    name
    for name in config_groups()["experiment"]
    if compose_experiment(name, "data.root=/tmp").data.name in TREES
]


def test_every_real_data_layout_has_an_experiment():
    covered = {compose_experiment(name, "data.root=/tmp").data.name for name in EXPERIMENTS}
    assert covered >= set(TREES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_on_its_layout(experiment, tmp_path):
    base = compose_experiment(experiment, "data.root=/tmp")
    root = TREES[base.data.name](tmp_path / base.data.name)
    cfg = compose_experiment(
        experiment,
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop_size=[32,32]",
        "data.batch_size=2",
        *TINY_MODELS[base.model._target_.rsplit(".", 1)[-1]],
    )
    validate(cfg)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[:2] == (2, cfg.data.in_channels)  # 32x32 crops, or whole images (SegNet)
    cfg = with_derived(
        cfg, SemanticTask.derive(cfg)
    )  # median_frequency (segnet_camvid): numbers, as training
    model, loss_fn = instantiate(cfg.model), instantiate(cfg.loss)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1) * 255
    image = (batch["image"].float() - mean) / std
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(2):  # the experiment's own model, loss and optimizer take real steps on its layout
        loss = loss_fn(model(image), batch["mask"], batch.get("weight"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[1] != losses[0]
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))
    with torch.no_grad():
        logits = model.eval()(image)
    logits = logits["out"] if isinstance(logits, dict) else logits
    assert logits.shape == (2, cfg.data.num_classes, *batch["image"].shape[-2:])


@pytest.mark.slow
def test_vnet_trains_and_evaluates_on_decathlon_volumes(tmp_path):
    root = make_decathlon_tree(tmp_path / "Task09_Tiny", cases=5, shape=(20, 16, 12))
    small = [
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop_size=[8,8,8]",
        "model.base_channels=4",
        "trainer.max_epochs=2",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
        "optimizer.lr=0.01",
    ]
    train = run_cli(
        "train", "experiment=vnet_decathlon", *small, "trainer.check_val_every_n_epoch=1", cwd=tmp_path
    )
    assert train.returncode == 0, train.stderr[-3000:]
    (best,) = checkpoints(tmp_path / "outputs", "best.ckpt")
    result = run_cli("eval", f"ckpt={best}", f"data.root={root}", "data.num_workers=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = (tmp_path / "outputs" / "eval").rglob("metrics.json")
    scores = json.loads(metrics.read_text())
    assert set(scores["per_class"]) == {"background", "spleen"} and 0 <= scores["mIoU"] <= 1
    # Every voxel of the held-out case is scored at its own size, and its 8x7x6 labelled box is there.
    assert scores["images"] == 1 and scores["pixels"] == 20 * 16 * 12
    assert scores["per_class"]["spleen"]["pixels"] == 8 * 7 * 6
    assert torch.load(best, weights_only=True)["segtrain"]["config"]["model"]["_target_"].endswith("VNet")


#: The reading list's 25 systems and Panoptic FPN, and the model config (or adversarial group) each recipe
#: must train.
SYSTEMS = [
    "fcn8s", "parsenet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus", "dpn", "deconvnet", "segnet",
    "unet", "vnet", "fpn", "pspnet", "mask_rcnn", "panet", "masklab", "lstm2d", "reseg", "graph_lstm",
    "text_objseg", "attention_to_scale", "reverse_attention", "pan", "danet", "adversarial", "panoptic_fpn",
]  # fmt: skip


def paper_recipes() -> dict[str, str]:
    """System -> the experiment whose header carries a "# Paper: number | metric | data" line."""
    found = {}
    for name in config_groups()["experiment"]:
        text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        paper = [line for line in text.splitlines() if line.startswith("# Paper:")]
        if paper:
            assert len(paper[0].split("|")) == 3, f"{name}: # Paper: number | metric | the paper's data"
            system = (
                "adversarial"
                if "override /adversarial:" in text
                else text.split("override /model: ")[1].split()[0]
            )
            assert system not in found, f"two paper recipes for {system}: {found.get(system)} and {name}"
            found[system] = name
    return found


def test_every_system_has_one_paper_recipe_that_trains_its_model():
    recipes = paper_recipes()
    assert sorted(recipes) == sorted(SYSTEMS)
    for system, experiment in recipes.items():
        cfg = compose_experiment(experiment, "data.root=/tmp")
        validate(cfg)
        if system == "adversarial":
            assert cfg.adversarial is not None
        else:
            expected = compose("config", [f"model={system}", f"data={cfg.data.name}", "data.root=/tmp"]).model
            assert cfg.model._target_ == expected._target_, experiment
        # Its optimizer and schedule build and step (on one parameter: the networks are tested elsewhere).
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = instantiate(cfg.optimizer)(params=[parameter])
        steps = cfg.trainer.get("max_steps", -1)
        scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps if steps > 0 else 1000)
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] > 0


def test_step_schedule_equals_torchs_multistep_and_step_schedules():
    from segtrain.schedulers import step

    def lrs(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        schedule = make(optimizer)
        seen = []
        for _ in range(40):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    ours = lrs(lambda o: step(o, 40, milestones=[30, 12]))
    torchs = lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [12, 30], gamma=0.1))
    assert ours == pytest.approx(torchs)
    ours = lrs(lambda o: step(o, 40, every=7, gamma=0.5))
    torchs = lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5))
    assert ours == pytest.approx(torchs)
    # Warm-up: linear from warmup_ratio x lr to lr over warmup_steps, then the steps.
    warm = lrs(lambda o: step(o, 40, milestones=[30], warmup_steps=4, warmup_ratio=0.25))
    assert warm[:5] == pytest.approx([0.005, 0.00875, 0.0125, 0.01625, 0.02]) and warm[30] == pytest.approx(
        0.002
    )


def test_text_objseg_paper_config_keeps_vgg_fixed_and_the_small_one_trains_it():
    from segtrain.models.text_objseg import TextObjSeg

    paper = compose("config", ["task=referring", "model=text_objseg"]).model
    small = compose("config", ["task=referring"]).model
    assert paper.freeze_vgg and not small.freeze_vgg
    model = TextObjSeg(
        ["<pad>", "<unk>", "a"],
        freeze_vgg=True,
        embedding_dim=4,
        lstm_hidden=4,
        fc_width=8,
        image_features=4,
        mlp_hidden=4,
        backbone={"width": 0.0625, "pretrained": False},
    )
    frozen = {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert frozen == {"trunk", "fc6", "fc7", "fc8"} and trained == {"embedding", "lstm", "mlp", "upsample"}
