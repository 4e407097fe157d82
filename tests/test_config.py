"""Composition of every config group, and validation before anything heavy is built."""
import pytest
from hydra.utils import instantiate

from segtrain.config import compose, config_groups, validate
from segtrain.errors import SegtrainError

GROUPS = config_groups()


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("data", GROUPS["data"])
def test_every_model_composes_with_every_data_config(model, data, tmp_path):
    cfg = compose("config", [f"model={model}", f"data={data}", f"data.root={tmp_path}" if data != "shapes" else "data.root=null"])
    validate(cfg)
    assert cfg.model.num_classes == len(cfg.data.classes)


@pytest.mark.parametrize("group", ["loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "debug"])
def test_every_group_option_composes(group):
    for option in GROUPS[group]:
        overrides = [f"{group}={option}"]
        if option.startswith("voc"):
            overrides.append("data.root=/tmp")
        cfg = compose("config", overrides)
        if group in ("loss", "optimizer", "scheduler"):
            assert instantiate(cfg[group]) is not None


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


def test_missing_data_root_says_how_to_set_it():
    with pytest.raises(SegtrainError, match=r"data.root is not set.*data.root=/path.*JPEGImages"):
        validate(compose("config", ["data=voc"]))


def test_nonexistent_data_root_names_path_and_layout(tmp_path):
    with pytest.raises(SegtrainError, match=rf"data.root={tmp_path}/nope does not exist.*SegmentationClass"):
        validate(compose("config", ["data=voc", f"data.root={tmp_path}/nope"]))


@pytest.mark.parametrize(
    "override, key",
    [("optimizer.lr=-0.1", "optimizer.lr"), ("optimizer.lr=fast", "optimizer.lr"),
     ("data.batch_size=0", "data.batch_size"), ("data.ignore_index=300", "data.ignore_index"),
     ("inference.mode=tiles", "inference.mode"), ("loss.class_weights=[a,b]", "loss.class_weights"), ("trainer.max_epochs=1.5", "trainer.max_epochs")],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(SegtrainError, match=rf"^{key}=.* is invalid: it must be"):
        validate(compose("config", [override]))


def test_inconsistent_pairs_are_caught():
    with pytest.raises(SegtrainError, match="model.num_classes=3 does not match the 6 classes"):
        validate(compose("config", ["model.num_classes=3"]))
    with pytest.raises(SegtrainError, match="data.mean has 1 values for data.in_channels=3"):
        validate(compose("config", ["data.mean=[0.5]"]))
    with pytest.raises(SegtrainError, match="loss.class_weights has 2 weights for 6 classes"):
        validate(compose("config", ["loss.class_weights=[1,2]"]))
    with pytest.raises(SegtrainError, match="inference.mode=slide needs inference.crop_size"):
        validate(compose("config", ["inference.mode=slide"]))
