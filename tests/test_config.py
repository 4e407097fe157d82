"""Composition of every config group, and validation before anything heavy is built."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.loggers import Logger

from segtrain.commands.train import build_trainer
from segtrain.config import compose, config_dir, config_groups
from segtrain.errors import SegtrainError
from segtrain.runtime.checkpoint import AtomicCheckpointIO
from segtrain.tasks.declared import config_task
from segtrain.validation import check_accelerator, validate
from tests.instances import write_coco_json

GROUPS = config_groups()


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("data", GROUPS["data"])
def test_every_model_composes_with_every_data_config_of_its_task(model, data, tmp_path):
    """A pair of one task validates under that task; a pair across tasks gets the error that names it."""
    cfg = compose("config", [f"model={model}", f"data={data}"])
    model_task, data_task = config_task(cfg.model._target_), config_task(cfg.data._target_)
    root = "data.root=null" if data == "shapes" else f"data.root={tmp_path}"
    if data == "instances_folder":
        write_coco_json(tmp_path / "annotations" / "train.json", {1: "cell"})
    cfg = compose("config", [f"task={data_task}", f"model={model}", f"data={data}", root])
    if model_task != data_task:
        expected = f"is for task={model_task}, but this run's task is {data_task}"
        with pytest.raises(SegtrainError, match=expected):
            validate(cfg)
        return
    validate(cfg)
    if data_task == "referring":  # one logit per pixel: the model reads the data's vocabulary instead
        assert cfg.model.in_channels == cfg.data.in_channels and "vocabulary" in cfg.data
        return
    background = 1 if data_task == "instance" else 0
    assert cfg.model.num_classes == len(cfg.data.classes) + background


@pytest.mark.parametrize(
    "group", ["loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "debug"]
)
def test_every_group_option_composes_and_builds(group, tmp_path):
    for option in GROUPS[group]:
        cfg = compose("config", [f"{group}={option}", f"paths.output_dir={tmp_path}", "run_name=test"])
        if group == "loss":
            assert isinstance(instantiate(cfg.loss), torch.nn.Module)
        elif group == "optimizer":
            assert isinstance(
                instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer
            )
        elif group == "scheduler":
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            assert isinstance(
                instantiate(cfg.scheduler)(optimizer, total_steps=10), torch.optim.lr_scheduler.LRScheduler
            )
        elif group == "trainer":
            check_trainer(cfg)
        elif group == "logger":
            assert all(isinstance(instantiate(node), Logger) for node in cfg.logger.values() if node)
        elif group == "callbacks":
            assert all(isinstance(instantiate(node), pl.Callback) for node in cfg.callbacks.values() if node)
        elif group == "experiment":
            data_root = (
                [f"data.root={tmp_path}"] if OmegaConf.is_missing(cfg.data, "root") or cfg.data.root else []
            )
            validate(compose("config", [f"experiment={option}", *data_root]))
        else:
            assert cfg.debug_run is True and any(cfg.trainer[key] for key in DEBUG_KEYS), option


DEBUG_KEYS = ("fast_dev_run", "limit_train_batches", "overfit_batches")


def check_trainer(cfg) -> None:
    """A CPU preset builds a Trainer that writes checkpoints atomically; a GPU preset says when there is
    no GPU."""
    if cfg.trainer.accelerator != "cpu" and not torch.cuda.is_available():
        validate(cfg)
        with pytest.raises(SegtrainError, match="no CUDA GPU is visible"):
            check_accelerator(cfg)
        return
    trainer = build_trainer(cfg, rank_function="segtrain.commands.train.fit")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), (
        "checkpoints must be written atomically"
    )


def test_voc_config_lists_21_classes_and_palette():
    cfg = compose("config", ["data=voc", "data.root=/tmp"])
    assert len(cfg.data.classes) == 21 and len(cfg.data.palette) == 21
    assert cfg.data.classes[15] == "person" and list(cfg.data.palette[15]) == [192, 128, 128]


def test_unknown_model_lists_the_choices():
    with pytest.raises(SegtrainError) as err:
        compose("config", ["model=deeplabv9"])
    assert "model=deeplabv9 is not an option" in str(err.value)
    assert str(err.value).endswith("choose one of: " + ", ".join(config_groups()["model"]))


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(SegtrainError) as err:
        compose("config", ["data.bach_size=4"])
    message = str(err.value)
    assert "unknown config key 'data.bach_size'" in message and "Did you mean 'data.batch_size'" in message
    assert "num_workers" in message


def test_adding_a_key_that_is_there_says_to_drop_the_plus():
    with pytest.raises(SegtrainError) as err:
        compose("config", ["+data.batch_size=4"])
    assert str(err.value).startswith("+data.batch_size=... adds a key, but this config already has")
    assert "write data.batch_size=... to set it" in str(err.value)


def test_missing_data_root_says_how_to_set_it():
    with pytest.raises(SegtrainError, match=r"data.root is not set.*data.root=/path.*JPEGImages"):
        validate(compose("config", ["data=voc"]))


def test_nonexistent_data_root_names_path_and_layout(tmp_path):
    with pytest.raises(SegtrainError, match=rf"data.root={tmp_path}/nope does not exist.*SegmentationClass"):
        validate(compose("config", ["data=voc", f"data.root={tmp_path}/nope"]))


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.ignore_index=300", "data.ignore_index"),
        ("inference.mode=tiles", "inference.mode"),
        ("inference.score_resolution=full", "inference.score_resolution"),
        ("loss.class_weights=[a,b]", "loss.class_weights"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs"),
        # Every threshold and probability of every task's inference settings (conf/inference/<task>.yaml),
        # and those of models and schedules.
        ("task=instance data=shapes inference.score_threshold=2", "inference.score_threshold"),
        ("task=instance data=shapes inference.score_threshold=1.0", "inference.score_threshold"),
        ("task=instance data=shapes inference.mask_threshold=-1", "inference.mask_threshold"),
        ("task=instance data=shapes inference.mask_threshold=0", "inference.mask_threshold"),
        ("inference.gaussian=maybe", "inference.gaussian"),
        ("inference.crf_params.iterations=0", "inference.crf_params.iterations"),
        ("inference.crf_params.theta_beta=0", "inference.crf_params.theta_beta"),
        ("scheduler.warmup_ratio=1.5", "scheduler.warmup_ratio"),
        ("model=fcn8s model.dropout=-0.5", "model.dropout"),
        ("task=instance model=mask_rcnn data=shapes model.box_score_thresh=5", "model.box_score_thresh"),
        ("task=instance model=mask_rcnn data=shapes +model.box_nms_thresh=1.2", "model.box_nms_thresh"),
        ("adversarial=scaling adversarial.tau=2", "adversarial.tau"),
        ("task=referring inference.mask_threshold=1.5", "inference.mask_threshold"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(SegtrainError, match=rf"^{key}=.* is invalid: it must be"):
        validate(compose("config", override.split()))


def test_an_override_hydra_cannot_parse_gets_the_quoting_that_works(capsys):
    from segtrain.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["data.root=x", "data.annotation_file=annotations/{split}.json"])
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(
        "error: cannot read the override 'data.annotation_file=annotations/{split}.json'"
    )
    assert message.endswith("""'data.annotation_file="annotations/{split}.json"'""")
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_inconsistent_pairs_are_caught():
    with pytest.raises(SegtrainError, match="model.num_classes=3 does not match the 6 classes"):
        validate(compose("config", ["model.num_classes=3"]))
    with pytest.raises(SegtrainError, match="data.mean has 1 values for data.in_channels=3"):
        validate(compose("config", ["data.mean=[0.5]"]))
    with pytest.raises(SegtrainError, match="loss.class_weights has 2 weights for 6 classes"):
        validate(compose("config", ["loss.class_weights=[1,2]"]))
    with pytest.raises(SegtrainError, match="inference.mode=slide needs inference.crop_size"):
        validate(compose("config", ["inference.mode=slide"]))


@pytest.mark.parametrize("task", GROUPS["task"])
def test_each_inference_key_a_task_ships_is_described_by_the_task(task):
    """``--help`` and validation read a task's keys from its spec: a key added to the task's inference YAML
    without a description there would be neither checked nor listed."""
    from segtrain.tasks import spec_of

    shipped = OmegaConf.load(config_dir() / "inference" / f"{task}.yaml")

    def flattened(node: dict, prefix: str) -> dict:
        items = {}
        for key, value in node.items():
            items.update(
                flattened(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
            )
        return items

    flat = flattened(OmegaConf.to_container(shipped, resolve=False), "inference.")
    described = {key.name: key for key in spec_of(task).keys}
    assert set(flat) == set(described)
    for name, key in described.items():
        value = flat[name]
        if not (isinstance(value, str) and value.startswith("${")):
            assert key.check(value), f"the shipped {name}={value!r} fails its own check"


@pytest.mark.parametrize("data", GROUPS["data"])
def test_each_data_config_extends_its_tasks_base_and_relists_none_of_it(data):
    """A data config names what is its own (classes, reader, layout) over one base chain per task
    (_base, then _image_base, _instances_base or _referring_base): a key set to the value its base already
    gives is a copy that the next change to the base would miss."""
    directory = config_dir() / "data"

    def chain(name: str) -> list[dict]:
        node = OmegaConf.to_container(OmegaConf.load(directory / f"{name}.yaml"), resolve=False)
        bases = [entry for entry in node.pop("defaults", []) if entry != "_self_"]
        return [layer for base in bases for layer in chain(base)] + [node]

    *bases, own = chain(data)
    assert bases, f"conf/data/{data}.yaml extends no base"
    inherited = {}
    for layer in bases:
        inherited.update(layer)
    copied = [key for key, value in own.items() if key in inherited and inherited[key] == value]
    assert not copied, f"conf/data/{data}.yaml repeats its base's {copied}"
