"""The task a model or data module class is for (its ``task`` class attribute, semantic by default),
read from segtrain's source without importing the class: a config check must not wait for torch,
torchvision and Lightning to load. Classes outside segtrain are imported."""

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
    module, _, name = target.rpartition(".")
    if module.startswith("segtrain."):
        found = _declared(module, name)
        if found is not None:
            return found
    try:
        return getattr(get_class(target), "task", DEFAULT)
    except Exception:
        return None


@functools.lru_cache(maxsize=None)
def _declared(module: str, name: str) -> str | None:
    """``task`` of class ``name`` in segtrain's ``module``: its own assignment, else its first segtrain
    base's, else the default; None where the source does not define the class."""
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
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    for statement in cls.body:
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "task" for t in statement.targets)
            and isinstance(statement.value, ast.Constant)
        ):
            return statement.value.value
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        qualified = imported.get(base.id, f"{module}.{base.id}")
        if qualified.startswith("segtrain."):
            found = _declared(*qualified.rsplit(".", 1))
            if found is not None:
                return found
    return DEFAULT
