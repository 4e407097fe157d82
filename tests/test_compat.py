"""The private APIs segtrain relies on are still what it expects, segtrain reaches them only through
segtrain/compat.py, and the third-party messages it parses still read as it expects."""

import ast
from pathlib import Path

import pytest

from segtrain.compat import MESSAGE_FORMATS, PRIVATE_APIS, PrivateAPI, check, message_match

PACKAGE = Path(__file__).resolve().parents[1] / "segtrain"


@pytest.mark.parametrize("entry", PRIVATE_APIS, ids=lambda entry: entry.name.partition(":")[2])
def test_private_api_is_as_segtrain_expects(entry):
    problem = check(entry)
    assert problem is None, problem


def test_the_check_notices_each_kind_of_change():
    launcher = PRIVATE_APIS[0].name
    assert "is gone" in check(PrivateAPI("pytorch_lightning:NoSuchLauncher", None, "a test"))
    assert "now takes" in check(PrivateAPI(launcher, ("self", "environment"), "a test"))
    assert "no longer sets" in check(PrivateAPI(launcher, None, "a test", attributes=("no_such_attribute",)))


def test_every_private_name_compat_hands_out_is_listed_and_there():
    from segtrain import compat

    listed = {entry.name for entry in PRIVATE_APIS}
    for name, (module, attribute) in compat._LAZY.items():
        assert any(entry.startswith(f"{module}:{attribute}") for entry in listed), (
            f"compat hands out {module}.{attribute}: list it (or the members segtrain relies on)"
        )
        assert getattr(compat, name) is not None


#: Keys of Hydra's config grammar, which are public although they start with an underscore.
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def test_no_module_but_compat_reaches_a_private_name_of_another_library():
    """An import of a private name or module, or ``x._name`` on an object other than self or cls, appears in
    segtrain/compat.py only (segtrain's own private names excepted)."""
    own = {path.stem for path in PACKAGE.rglob("*.py")}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and not node.module.startswith(("segtrain", "__future__"))
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(part.startswith("_") for part in node.module.split(".")):
                    found.append(f"{path.name}: from {node.module} import {private or '...'}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if node.attr in HYDRA_KEYS or (isinstance(owner, ast.Name) and owner.id in own):
                    continue
                found.append(f"{path.name}:{node.lineno}: ._{node.attr.lstrip('_')}")
    assert found == []


def test_hydras_composition_messages_read_as_segtrain_parses_them(tmp_path):
    """The texts of Hydra's own errors for a missing option, an unknown key and a key added with + that is
    there, made by Hydra itself (not through segtrain)."""
    from hydra import compose, initialize_config_dir

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.yaml").write_text("width: 1\n")
    (tmp_path / "config.yaml").write_text("defaults:\n  - model: a\n")
    messages = {}
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        for name, override in [
            ("hydra_missing_option", "model=b"),
            ("hydra_unknown_key", "model.depth=2"),
            ("hydra_present_key", "+model.width=2"),
        ]:
            with pytest.raises(Exception) as raised:
                compose("config", overrides=[override])
            messages[name] = str(raised.value)
    assert message_match("hydra_missing_option", messages["hydra_missing_option"]).groups() == ("model", "b")
    assert message_match("hydra_unknown_key", messages["hydra_unknown_key"]).group(1) == "model.depth"
    assert message_match("hydra_present_key", messages["hydra_present_key"]).group(1) == "model.width"


def test_hydras_instantiation_message_reads_as_segtrain_parses_it():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"_target_": "segtrain.models.unet.UNet", "num_classes": 2, "bogus": 1}})
    with pytest.raises(InstantiationException) as raised:
        instantiate(cfg.model)
    text = str(raised.value)
    assert message_match("hydra_instantiate_target", text).group(1) == "segtrain.models.unet.UNet"
    assert message_match("hydra_instantiate_key", text).group(1) == "model"
    detail = " ".join(str(raised.value.__cause__).split())
    assert message_match("python_unexpected_keyword", detail).group(1) == "bogus"
    assert set(MESSAGE_FORMATS) == {
        "hydra_missing_option",
        "hydra_unknown_key",
        "hydra_present_key",
        "hydra_instantiate_target",
        "hydra_instantiate_key",
        "python_unexpected_keyword",
    }
