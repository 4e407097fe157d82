"""The one exception type a user sees as a clean message instead of a traceback, and the translations of
third-party errors (Hydra's composition and instantiation, a worker's re-raised traceback) into it. The
third-party message formats parsed here are ``segtrain.compat.MESSAGE_FORMATS``, pinned by tests."""

from __future__ import annotations

import difflib
import re
from typing import Callable

from segtrain.compat import message_match


class SegtrainError(Exception):
    """Bad input: the message names the file or config key and says how to fix it."""


def override_error(message: str, overrides: list[str], groups: dict, compose: Callable) -> str:
    """Hydra's composition error as segtrain's: a missing group option with the choices (``groups``), a
    key added with + that is there, or an unknown key with the valid ones around it (``compose`` composes
    the other overrides, to read them)."""
    from omegaconf import DictConfig, OmegaConf

    message = message.strip()
    missing = message_match("hydra_missing_option", message)
    if missing:
        group, option = missing.groups()
        choices = groups.get(group, [])
        return (
            f"{group}={option} is not an option of the '{group}' group; choose one of: {', '.join(choices)}"
        )
    present = message_match("hydra_present_key", message)
    if present:
        key = present.group(1)
        return (
            f"+{key}=... adds a key, but this config already has {key}: write {key}=... to set it "
            f"(or ++{key}=... to set it whether or not it is there)"
        )
    match = message_match("hydra_unknown_key", message)
    if not match:
        return message
    key = match.group(1)
    others = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    try:
        base = compose(others)
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


def user_message(err: BaseException) -> str:
    """The error text, also when a DataLoader worker re-raised it with the worker's traceback."""
    lines = str(err).splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if re.match(rf"([\w.]+\.)?{type(err).__name__}: ", lines[index]):
            return "\n".join([lines[index].partition(": ")[2], *lines[index + 1 :]]).strip()
    return str(err)


def instantiation_message(err: BaseException) -> str:
    """Hydra's "Error in call to target ..." as one line that names the config key and the fix."""
    if isinstance(err.__cause__, SegtrainError):
        return user_message(err.__cause__)
    text = str(err)
    target = message_match("hydra_instantiate_target", text)
    key = message_match("hydra_instantiate_key", text)
    where = f"{key.group(1) if key else 'an object'} ({target.group(1) if target else 'unknown target'})"
    cause = err.__cause__
    detail = " ".join(str(cause).split()) if cause is not None else " ".join(text.splitlines()[1:2])
    unexpected = message_match("python_unexpected_keyword", detail)
    if unexpected and key:
        return (
            f"cannot build {where}: it takes no argument '{unexpected.group(1)}'. "
            f"Remove {key.group(1)}.{unexpected.group(1)} from the overrides"
        )
    return f"cannot build {where}: {detail}"
