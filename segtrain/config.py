"""Finding and composing configs, with messages that name the bad override and its valid choices."""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig

from segtrain.errors import SegtrainError, override_error, unparsable_override
from segtrain.resolvers import register_resolvers

_PACKAGE_DIR = Path(__file__).resolve().parent

register_resolvers()


def config_dir() -> Path:
    """``segtrain/conf`` inside an installed wheel, else the repository's top-level ``conf/``."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise SegtrainError(f"segtrain's configs were not found next to {_PACKAGE_DIR}; reinstall segtrain")


def config_groups() -> dict[str, list[str]]:
    """Every config group under conf/ and its options, e.g. ``{"model": ["deeplabv3", ...]}``."""
    root = config_dir()
    groups = {}
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group != "." and not path.stem.startswith("_"):
            groups.setdefault(group, []).append(path.stem)
    return groups


def compose(config_name: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose like the CLI does, with messages that list the valid choices on a bad override.

    ``with_hydra``: keep the ``hydra`` node (the run directory) and make ``${hydra:...}`` resolvable, as
    in the run Hydra is about to start."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
        except (ConfigCompositionException, MissingConfigException) as err:
            raise SegtrainError(
                override_error(
                    str(err), overrides, config_groups(), lambda others: hydra_compose(config_name, others)
                )
            ) from None
        except OverrideParseException as err:
            raise SegtrainError(unparsable_override(overrides, err)) from None
    if with_hydra:
        HydraConfig.instance().set_config(cfg)
    return cfg
