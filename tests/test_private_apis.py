"""The private Lightning / Hydra / Optuna APIs segtrain relies on are still what it expects."""

import re
from pathlib import Path

import pytest

from segtrain.private_apis import PRIVATE_APIS, PrivateAPI, check

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


def test_every_private_import_of_segtrain_is_listed():
    listed = {entry.name for entry in PRIVATE_APIS}
    for path in PACKAGE.rglob("*.py"):
        for module, names in re.findall(
            r"^from ([\w.]+) import ([^\n(]+)", path.read_text(), flags=re.MULTILINE
        ):
            if module.startswith(("segtrain", "__future__")):
                continue
            for name in (n.strip() for n in names.split(",")):
                if name.startswith("_") or any(part.startswith("_") for part in module.split(".")):
                    assert any(entry.startswith(f"{module}:{name}") for entry in listed), (
                        f"{path.name} imports {module}.{name}: list it in segtrain/private_apis.py"
                    )
