"""The task a model or data module class is for (its ``task`` class attribute, semantic by default) and
other constant class attributes (a dataset's ``layout``), read from segtrain's source without importing
the class: a config check must not wait for torch, torchvision and Lightning to load. Classes outside
segtrain are imported."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from hydra.utils import get_class

_PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT = "semantic"


def config_task(target: str) -> str | None:
    """The task of the class ``target`` names, or None when it cannot be found (instantiation reports
    that)."""
    return class_attribute(target, "task", DEFAULT)


def class_attribute(target: str, attribute: str, default=None):
    """A constant class attribute (``task``, a dataset's ``layout``) of the class ``target`` names: read
    from the source for segtrain's classes, imported for others; None when the class cannot be found."""
    module, _, name = target.rpartition(".")
    if module.startswith("segtrain."):
        found = _declared(module, name, attribute, default)
        if found is not None:
            return found
    try:
        return getattr(get_class(target), attribute, default)
    except Exception:
        return None


@functools.lru_cache(maxsize=None)
def _declared(module: str, name: str, attribute: str, default):
    """``attribute`` of class ``name`` in segtrain's ``module``: its own assignment (a constant, or a
    module-level constant's name), else its first segtrain base's, else ``default``; None where the source
    does not define the class."""
    relative = Path(*module.split(".")[1:])
    path = next(
        (p for p in (_PACKAGE / f"{relative}.py", _PACKAGE / relative / "__init__.py") if p.is_file()), None
    )
    if path is None:
        return None
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    constants = {
        target.id: statement.value.value
        for statement in tree.body
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    for statement in cls.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attribute for t in statement.targets
        ):
            if isinstance(statement.value, ast.Constant):
                return statement.value.value
            if isinstance(statement.value, ast.Name) and statement.value.id in constants:
                return constants[statement.value.id]
            return None
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        qualified = imported.get(base.id, f"{module}.{base.id}")
        if qualified.startswith("segtrain."):
            found = _declared(*qualified.rsplit(".", 1), attribute, default)
            if found is not None:
                return found
    return default
