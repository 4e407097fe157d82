"""The tasks segtrain trains. A task is ``conf/task/<name>.yaml`` naming its spec as ``task._target_``
(``segtrain.tasks.spec.Task``: the hooks the commands call) and the package that holds it; the commands
find a run's task through its config and hold no task's logic themselves."""

from __future__ import annotations

import copy

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from segtrain.config import config_dir
from segtrain.data.description import DEFAULT_TASK
from segtrain.errors import SegtrainError
from segtrain.tasks.spec import Task


def task_name(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "task.name", default=DEFAULT_TASK))


def task_spec(cfg: DictConfig) -> type[Task]:
    """The spec ``task._target_`` names (configs composed before the key existed: the task of their name)."""
    target = OmegaConf.select(cfg, "task._target_")
    if target is None:
        name = task_name(cfg)
        spec = spec_of(name)
        if spec is None:
            raise SegtrainError(f"task={name} has no conf/task/{name}.yaml; set task._target_ to its spec")
        return spec
    try:
        spec = get_class(str(target))
    except Exception as err:
        raise SegtrainError(
            f"task._target_={target} cannot be imported ({str(err).splitlines()[0][:200]}); it names the "
            "task's spec, a segtrain.tasks.spec.Task subclass"
        ) from None
    if not (isinstance(spec, type) and issubclass(spec, Task)):
        raise SegtrainError(
            f"task._target_={target} is not a task spec (a segtrain.tasks.spec.Task subclass)"
        )
    return spec


def spec_of(name: str) -> type[Task] | None:
    """The spec of segtrain's own task ``name`` (``conf/task/<name>.yaml``), or None."""
    path = config_dir() / "task" / f"{name}.yaml"
    if not path.is_file():
        return None
    target = OmegaConf.select(OmegaConf.load(path), "task._target_")
    return get_class(target) if target else None


def with_derived(cfg: DictConfig, derived: dict) -> DictConfig:
    """A copy of ``cfg`` with the values its task derived from the data (``Task.derive``) in place."""
    result = copy.deepcopy(cfg)
    for key, value in derived.items():
        OmegaConf.update(result, key, value, merge=False)
    return result


def build_task(cfg: DictConfig):
    """The task's LightningModule, with the model, optimizer and scheduler of ``cfg``."""
    return task_spec(cfg).build_module(cfg)


def build_datamodule(cfg: DictConfig):
    return task_spec(cfg).build_datamodule(cfg)
