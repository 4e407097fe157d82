"""The ``${name:...}`` resolvers segtrain's configs use (``${palette:N}``, ``${loader_workers:...}``,
``${coco_categories:...}``, ...), registered with OmegaConf by ``register_resolvers``.
"""

from __future__ import annotations

import colorsys
import functools
import secrets
from datetime import datetime
from pathlib import Path

from omegaconf import ListConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.runtime.processes import usable_cores


def distinct_palette(count: int) -> ListConfig:
    """``${palette:N}``: N colours for datasets without an official palette, deterministic and
    spread around the hue circle by the golden ratio so that neighbouring ids differ."""
    colors = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        value = 0.95 if index % 2 else 0.7
        rgb = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append([round(channel * 255) for channel in rgb])
    # A ListConfig, not a list: OmegaConf.resolve (--resolve) rejects plain lists from resolvers.
    return ListConfig(colors)


def sweep_group() -> str | None:
    """``${sweep_group:}``: ``<run_name>/<sweep directory>`` in a multirun job, null in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def slurm_gpus(accelerator: str, devices) -> int:
    """``${slurm_gpus:${trainer.accelerator},${trainer.devices}}``: GPUs to ask SLURM for per node."""
    return devices if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > 0 else 0


@functools.lru_cache(maxsize=1)
def run_stamp() -> str:
    """``${run_stamp:}``: the start time and a random suffix, fixed for the process, so that runs started
    in the same second get directories of their own (and the CLI's pre-run check sees Hydra's directory)."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def loader_workers(devices=1) -> int:
    """``${loader_workers:${trainer.devices}}``: DataLoader workers per process, sized from this machine's
    cores: every core but one for the training processes, shared between them, at most 16 each."""
    processes = devices if isinstance(devices, int) and devices > 0 else 1
    return max(1, min(16, (usable_cores() - 1) // processes))


@functools.lru_cache(maxsize=8)
def _coco_categories(path: str, modified: float) -> tuple[tuple[int, str], ...]:
    from segtrain.data.datasets.coco_instances import load_coco_json

    categories = load_coco_json(Path(path))["categories"]
    return tuple(sorted((int(category["id"]), str(category["name"])) for category in categories))


def coco_categories(root: str, annotation_file: str, split: str, field: str) -> ListConfig:
    """``${coco_categories:root,file,split,name|id}``: the categories of a COCO-format json, by id."""
    path = Path(str(root)) / str(annotation_file).format(split=split)
    if not path.is_file():
        raise SegtrainError(
            f"data.annotation_file: {path} does not exist; data=instances_folder reads the classes from it. "
            "Point data.root and data.annotation_file ({split} is filled in) at your COCO-format json"
        )
    categories = _coco_categories(str(path), path.stat().st_mtime)
    return ListConfig([category_id if field == "id" else name for category_id, name in categories])


def register_resolvers() -> None:
    """Registers the resolvers (again: replacing is harmless) before a config is composed or resolved."""
    OmegaConf.register_new_resolver("len", lambda items: len(items), replace=True)
    OmegaConf.register_new_resolver("add", lambda *numbers: sum(numbers), replace=True)
    OmegaConf.register_new_resolver("coco_categories", coco_categories, replace=True)
    OmegaConf.register_new_resolver("loader_workers", loader_workers, replace=True)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    OmegaConf.register_new_resolver("palette", distinct_palette, replace=True)
    OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)
