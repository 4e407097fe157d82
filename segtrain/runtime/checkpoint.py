"""Writing checkpoints atomically, loading them, and re-applying command-line overrides to their
stored config.

A checkpoint is data, not code: the config it stores names ``_target_`` callables, and eval, predict
and export rebuild objects only from targets segtrain can name (``check_targets``).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf

from segtrain.compat import config_node
from segtrain.errors import SegtrainError
from segtrain.runtime.processes import process_runs

#: Keys of eval / predict / export themselves, never applied to a checkpoint's training config.
COMMAND_KEYS = {"ckpt", "input", "output", "format", "export", "command", "task_name", "hydra"}
#: The machine and where outputs go: always this command's, never the checkpoint's.
RUNTIME_KEYS = ("trainer", "runtime", "paths", "logger", "callbacks")


_ABSENT = object()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A process killed mid-write (``kill -9``, a node failure, a full disk) leaves the previous file
    whole, never a torn one that ``resume=true`` or a requeued job would then fail to load.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: rename is not atomic there, leave it to fsspec
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_beside(path)
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, path)
        except OSError as err:
            raise SegtrainError(save_failure(path, err, "the checkpoint", "paths.log_dir")) from None
        finally:
            temporary.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        """Resume reads tensors and plain containers only: a crafted pickle cannot run code."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return torch_load(path, "resume", map_location=map_location or "cpu")


def temporary_beside(path: Path) -> Path:
    """Where ``path`` is first written, to be renamed into place whole; the temporaries a killed process
    left for the same path (its pid no longer runs) are removed first."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not process_runs(int(pid)):
            stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save_failure(path: Path, err: OSError, what: str, key: str) -> str:
    """A full disk, a quota or a permission refused while writing ``path``: what was kept and what to do
    (``key``: the setting that moves the file elsewhere)."""
    kept = f"; the earlier {path.name} is intact" if path.exists() else ""
    return (
        f"cannot write {what} {path}: {err.strerror or err}{kept}. Free space or fix the permissions "
        f"there (or set {key} elsewhere), then run again"
    )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


#: Interpolations that read the run's environment rather than other keys: resolved when the config is
#: stored, since outside the run they would name another run's directory, time or host, or (the classes
#: of a COCO json) read a file that an evaluation elsewhere may not have.
_ENVIRONMENT_INTERPOLATION = re.compile(
    r"\$\{(hydra|now|run_stamp|oc\.env|sweep_group|slurm_gpus|coco_categories):"
)


def composed_config(cfg: DictConfig) -> dict:
    """``cfg`` as composed, for a checkpoint: interpolations between keys are kept, so that
    ``eval data.root=B`` moves every key derived from it; those reading the environment are resolved."""
    return _resolve_environment(
        OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(cfg, resolve=True)
    )


def _resolve_environment(composed: Any, resolved: Any) -> Any:
    if isinstance(composed, dict):
        return {key: _resolve_environment(value, resolved[key]) for key, value in composed.items()}
    if isinstance(composed, list) and isinstance(resolved, list):
        return [_resolve_environment(c, r) for c, r in zip(composed, resolved)]
    if isinstance(composed, str) and _ENVIRONMENT_INTERPOLATION.search(composed):
        return resolved
    return composed


@functools.lru_cache(maxsize=1)
def _configured_targets() -> frozenset[str]:
    """Every ``_target_`` named in segtrain's conf/."""
    from segtrain.config import config_dir

    found = set()
    for path in config_dir().rglob("*.yaml"):
        found.update(re.findall(r"^\s*-?\s*_target_:\s*([\w.]+)\s*$", path.read_text(), flags=re.MULTILINE))
    return frozenset(found)


#: Families a config may name beyond conf/: (module prefix, "module:base class") the target must subclass.
_TRUSTED_FAMILIES = (
    ("albumentations.", "albumentations.core.transforms_interface:BasicTransform"),
    ("torch.optim.", "torch.optim:Optimizer"),
    ("torch.optim.lr_scheduler.", "torch.optim.lr_scheduler:LRScheduler"),
    ("segtrain.models.", "torch.nn:Module"),
    ("segtrain.losses.", "torch.nn:Module"),
    ("segtrain.data.datasets.", "segtrain.data.datasets.base:SegmentationDataset"),
)


def _in_trusted_family(target: str) -> bool:
    module_name, _, name = target.rpartition(".")
    for prefix, base_spec in _TRUSTED_FAMILIES:
        if not target.startswith(prefix):
            continue
        try:
            candidate = getattr(importlib.import_module(module_name), name)
            base_module, _, base_name = base_spec.partition(":")
            base = getattr(importlib.import_module(base_module), base_name)
        except (ImportError, AttributeError, ValueError):
            continue
        if isinstance(candidate, type) and issubclass(candidate, base):
            return True
    return False


def _targets(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(key, value) of every ``_target_`` under ``node``, values resolved."""
    found = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                found.append((child, node[key]))
            else:
                found += _targets(config_node(node, key), child)
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            found += _targets(config_node(node, index), f"{path}[{index}]")
    return found


#: Callables that moved since a checkpoint may have been written: its config is read with the new names.
MOVED_TARGETS = {
    # The adversarial training policy went next to the semantic task (the discriminators stay in models).
    "segtrain.models.adversarial.Adversary": "segtrain.tasks.semantic.adversarial.Adversary",
}


def upgraded(config: Any) -> Any:
    """A checkpoint's stored config with the targets of ``MOVED_TARGETS`` renamed."""
    if isinstance(config, dict):
        return {
            key: MOVED_TARGETS.get(value, value) if key == "_target_" else upgraded(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [upgraded(item) for item in config]
    return config


def check_targets(stored: DictConfig, command_cfg: DictConfig, ckpt_path, key_name: str = "ckpt") -> None:
    """Refuses a checkpoint whose config names a callable segtrain cannot name itself.

    Allowed: the targets of conf/, the classes of the families above, and any target this command's own
    config names (the user typed it, e.g. ``model._target_=mypkg.Net`` for their own model).
    """
    typed = {str(value) for _, value in _targets(command_cfg)}
    for key, target in _targets(stored):
        target = str(target)
        if target in _configured_targets() or target in typed or _in_trusted_family(target):
            continue
        raise SegtrainError(
            f"{key_name}={ckpt_path} names {key}={target}, which is not a model, loss, optimizer, scheduler, "
            "dataset or transform that segtrain's configs can name; nothing was built from it. A "
            "checkpoint's config is data, not code: if you trust this file, name the target yourself on the "
            f"command line ({key.replace('[', '.').replace(']', '')}={target})."
        )


def torch_load(path: str | Path, key: str, **kwargs) -> Any:
    """``torch.load(weights_only=True)`` of the checkpoint given as ``key=path`` (tensors and plain
    containers only: a crafted pickle cannot run code); a missing or unreadable file is one error."""
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(
            f"{key}={path} does not exist; pass the path of a .ckpt written by segtrain train"
        )
    try:
        return torch.load(path, **{"map_location": "cpu", **kwargs}, weights_only=True)
    except Exception as err:
        raise SegtrainError(
            f"{key}={path} {_unreadable_reason(path, err)}. Pass another file (resume=true takes the newest "
            "last.ckpt)"
        ) from None


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why torch could not load ``path``, in the user's terms rather than torch's."""
    with open(path, "rb") as opened:
        magic = opened.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):  # a zip archive, or torch's legacy pickle
        return "is not a checkpoint: it is not a file torch.save wrote"
    if magic.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "is truncated or damaged: its archive has no end (a copy or a write that stopped early)"
    if "weights_only" in str(err).lower() or "unpickl" in str(err).lower():
        return (
            "holds objects other than tensors and plain values, which segtrain does not unpickle (a pickle "
            "can run code): it was not written by segtrain train"
        )
    return f"cannot be read as a checkpoint ({_first_line(err)})"


def read_metadata(path: str | Path, key: str = "ckpt") -> dict:
    """The ``segtrain`` entry of a checkpoint, without reading its tensors into memory."""
    return torch_load(path, key, mmap=True).get("segtrain", {})


def load_checkpoint(path: str | Path) -> dict:
    checkpoint = torch_load(path, "ckpt")
    if not isinstance(checkpoint, dict) or "segtrain" not in checkpoint:
        raise SegtrainError(f"ckpt={path} was not written by segtrain: it carries no 'segtrain' metadata")
    return checkpoint


def stored_config(checkpoint: dict, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's training config, with this command's runtime nodes and overrides.

    ``trainer``, ``paths``, ``logger`` and ``callbacks`` come from this command. Every override on
    the command line (``data.root=...``, ``inference.mode=slide``, or a group such as ``data=voc``)
    replaces the stored value with the one Hydra composed for this command, and since the stored config
    keeps its interpolations, what derives from an overridden key (``data.dataset.root``,
    ``inference.crop_size``) follows it. Every ``_target_`` is checked before anything is built.
    """
    stored = OmegaConf.create(upgraded(checkpoint["segtrain"]["config"]))
    for key in RUNTIME_KEYS:
        if key in cfg:
            stored[key] = cfg[key]
    # The task's spec is the one this command composed (the checkpoint's task, check_task says), and its
    # keys are the defaults of those the checkpoint predates (or, before tasks were named, all of them).
    stored["task"] = OmegaConf.merge(cfg.task, stored.get("task") or {})
    stored.task["_target_"] = cfg.task.get("_target_")
    for override in _parsed(overrides):
        key = override.key_or_group
        top = key.split(".")[0]
        if top in COMMAND_KEYS or top in RUNTIME_KEYS:
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(stored, parent) if parent else stored
            if isinstance(node, DictConfig) and leaf in node:
                node.pop(leaf)
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue  # a global overlay (experiment=, debug=): its keys are runtime keys or absent
        OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    try:
        check_targets(stored, cfg, cfg.ckpt)
    except SegtrainError:
        raise
    except Exception as err:  # an interpolation that does not resolve
        raise SegtrainError(
            f"ckpt={cfg.ckpt}: its stored config cannot be resolved ({_first_line(err)})"
        ) from None
    return stored


def _parsed(overrides: list[str]) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


def typed_values(cfg: DictConfig, prefix: str, overrides: list[str]) -> dict:
    """The keys under ``prefix`` typed on this command line, with the values the command composed."""
    values = {}
    for override in _parsed(overrides):
        key = override.key_or_group
        if key.startswith(prefix + ".") and not override.is_delete():
            values[key[len(prefix) + 1 :]] = OmegaConf.to_container(
                OmegaConf.create({"value": OmegaConf.select(cfg, key)}), resolve=True
            )["value"]
    return values


def check_task(trained: str, wanted: str, ckpt_path) -> None:
    """The command's task is the one the checkpoint or export at ``ckpt_path`` was trained for (the CLI
    composes eval, predict and export with it unless ``task=`` is typed)."""
    if wanted != trained:
        raise SegtrainError(
            f"ckpt={ckpt_path} is {'an' if trained[0] in 'aeiou' else 'a'} {trained} segmentation "
            f"checkpoint, but the command says task={wanted}. "
            f"Drop task={wanted} (the checkpoint's task is used), or pass a checkpoint trained with "
            f"task={wanted}"
        )


def check_classes(checkpoint: dict, cfg: DictConfig, ckpt_path) -> None:
    trained = list(checkpoint["segtrain"]["classes"])
    wanted = list(cfg.data.classes)
    if trained != wanted:
        raise SegtrainError(
            f"ckpt={ckpt_path} was trained on {len(trained)} classes {trained}, but "
            f"data={cfg.data.get('name', '?')} "
            f"declares {len(wanted)} classes {wanted}. Use the data config the model was trained with, "
            "or fine-tune a model on this dataset first."
        )
