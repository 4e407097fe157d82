"""Finding and composing configs, with messages that name the bad override and its valid choices."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError
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
            raise SegtrainError(_explain_override_error(err, config_name, overrides)) from None
        except OverrideParseException as err:
            raise SegtrainError(unparsable_override(overrides, err)) from None
    if with_hydra:
        HydraConfig.instance().set_config(cfg)
    return cfg


def unparsable_override(overrides: list[str], err: Exception) -> str:
    """Hydra's grammar error as the override it could not read and the quoting that passes it: braces,
    brackets, quotes and spaces in a value are grammar unless the value is quoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except Exception:  # the grammar's errors reach here as HydraException
            key, _, value = override.partition("=")
            quoted = value.replace('"', '\\"')
            return (
                f"cannot read the override {override!r} ({str(err).splitlines()[0]}). Quote its value for "
                f"Hydra, and the whole override for the shell: '{key}=\"{quoted}\"'"
            )
    return str(err).splitlines()[0]


def _explain_override_error(err: Exception, config_name: str, overrides: list[str]) -> str:
    message = str(err).strip()
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    if missing:
        group, option = missing.groups()
        choices = config_groups().get(group, [])
        return (
            f"{group}={option} is not an option of the '{group}' group; choose one of: {', '.join(choices)}"
        )
    present = re.search(r"Could not append to config. An item is already at '([^']+)'", message)
    if present:
        key = present.group(1)
        return (
            f"+{key}=... adds a key, but this config already has {key}: write {key}=... to set it "
            f"(or ++{key}=... to set it whether or not it is there)"
        )
    match = re.search(r"Could not override '([^']+)'", message)
    if not match:
        return message
    key = match.group(1)
    others = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    try:
        base = hydra_compose(config_name, overrides=others)
    except Exception:
        return message
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    if not isinstance(parent, DictConfig):
        return f"unknown config key '{key}': '{parent_key}' is not a config section"
    valid = sorted(k for k in parent.keys() if isinstance(k, str))
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" Did you mean '{parent_key + '.' if parent_key else ''}{close[0]}'?" if close else ""
    return (
        f"unknown config key '{key}'.{hint} Valid keys under '{parent_key or '<root>'}': {', '.join(valid)}. "
        f"To add a new key on purpose, write +{key}=..."
    )
