"""``segtrain [COMMAND] key=value ...``: the command word picks a config and a task function.

The overrides are composed and validated here first, so a bad key or value exits with one
message before Hydra creates a run directory or anything heavy is built.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from segtrain.compat import unresolved
from segtrain.errors import SegtrainError
from segtrain.reporting import fail, report_errors

# command -> (primary config, "module:function", one-line help)
COMMANDS = {
    "train": ("config", "segtrain.commands.train:train", "train a model (the default command)"),
    "eval": (
        "eval",
        "segtrain.commands.evaluate:evaluate",
        "evaluate ckpt=PATH on data.split (mIoU, Dice, ...)",
    ),
    "predict": (
        "predict",
        "segtrain.commands.predict:predict",
        "ckpt=PATH|model.onnx input=DIR_OR_FILE output=DIR",
    ),
    "export": (
        "export",
        "segtrain.commands.export:export",
        "ckpt=PATH format=onnx|torchscript, checked at two sizes",
    ),
    "bench": (
        "bench",
        "segtrain.commands.bench:bench",
        "time segtrain's training step against a plain PyTorch loop",
    ),
    "check-data": (
        "check_data",
        "segtrain.commands.check_data:check_data",
        "scan data.split for unreadable files, size mismatches and label-encoding slips",
    ),
    "list": (None, None, "list the models, datasets, losses, ... available in conf/"),
}

USAGE = """usage: segtrain [COMMAND] [key=value ...] [hydra flags]

commands:
{commands}

examples:
  segtrain                                   train the default run on the embedded shapes dataset
  segtrain model=deeplabv3plus data=voc data.root=/data/VOCdevkit/VOC2012
  segtrain train --cfg job                   print the composed config
  segtrain -m optimizer.lr=0.01,0.001        a sweep (Hydra multirun)
  segtrain eval ckpt=outputs/.../checkpoints/best.ckpt inference.mode=slide inference.crop_size=[512,512]
  segtrain export ckpt=... format=onnx
  segtrain check-data data=camvid data.root=/data/CamVid data.split=train

'segtrain COMMAND --help' explains that command's keys and groups; --help-all adds Hydra's help and the
command's whole composed config.
"""

# Commands that only read: composed without a Hydra run, so they leave no run directory behind.
_COMPOSE_ONLY = {"check-data"}
# Commands that run a checkpoint or an export (ckpt=) as the task it was trained for.
_CHECKPOINT_COMMANDS = {"eval", "predict", "export"}

# Hydra flags that take a value; everything else starting with '-' is a switch.
_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
_INSPECT_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve"}


def _split_args(args: list[str]) -> tuple[list[str], set[str]]:
    overrides, flags = [], set()
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            flags.add(arg)
            skip = arg in _VALUE_FLAGS
        else:
            overrides.append(arg)
    return overrides, flags


def _task_function(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


#: Old spellings still read: the name Hydra's template gave the command's key (one dot from task.name),
#: and segtrain's run-time keys from when they sat among Lightning's Trainer arguments.
_RENAMED_KEYS = {
    "task_name": "command",
    "trainer.channels_last": "runtime.channels_last",
    "trainer.compile": "runtime.compile",
    "trainer.threads": "runtime.threads",
}


def _renamed(arg: str) -> str:
    """``arg`` with ``--help-all`` as Hydra's ``--help`` and an old key spelling as today's."""
    if arg == "--help-all":
        return "--help"
    key, equals, value = arg.partition("=")
    bare = key.lstrip("+~")
    for old, new in _RENAMED_KEYS.items():
        if equals and (bare == old or bare.startswith(old + ".")):
            renamed = new + bare[len(old) :]
            print(f"segtrain: {bare} is now called {renamed}", file=sys.stderr)
            return f"{key[: len(key) - len(bare)]}{renamed}={value}"
    return arg


def _with_overrides(args: list[str], added: list[str]) -> list[str]:
    """``args`` with ``added`` beside the overrides already there: Hydra's parser takes the overrides as one
    run of arguments, so after a flag (``--cfg job``, ``-m``) they would be refused."""
    overrides, _ = _split_args(args)
    at = args.index(overrides[0]) if overrides else len(args)
    return [*args[:at], *added, *args[at:]]


def _typed(overrides: list[str], key: str) -> str | None:
    """The value of ``key=...`` on the command line, if typed."""
    return next((o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == key), None)


def checkpoint_task(command: str, overrides: list[str]) -> list[str]:
    """``task=NAME`` of the checkpoint or export that ``ckpt=`` names, for eval, predict and export to
    compose its task (its spec and inference settings); none where ``task=`` is typed (it must then be
    the checkpoint's) or the file is not there (the command says so)."""
    ckpt = _typed(overrides, "ckpt")
    if command not in _CHECKPOINT_COMMANDS or not ckpt or not Path(ckpt).is_file():
        return []
    from segtrain.commands.loading import trained_task
    from segtrain.runtime.checkpoint import check_task

    trained = trained_task(Path(ckpt))
    typed = _typed(overrides, "task")
    if typed is not None:
        check_task(trained, typed, ckpt)
        return []
    return [f"task={trained}"]


def precheck(command: str, overrides: list[str], flags: set[str]) -> list[str]:
    """Compose and validate one run before Hydra starts it and writes its directory (the jobs of a
    sweep are validated one by one, as they start). Returns the overrides the run adds to the command
    line's: the task a model or data config is for, where no task is typed (in a sweep, also the task of
    the models or data it sweeps)."""
    from omegaconf import OmegaConf

    from segtrain.config import compose
    from segtrain.run_directory import (
        check_fresh_directory,
        check_run_name,
        check_writable,
        claim_directory,
        requeued,
        wait_for_claim,
    )
    from segtrain.tasks import task_name
    from segtrain.validation import check_accelerator, other_task, validate

    multirun = bool(flags & {"-m", "--multirun"})
    swept = [o for o in overrides if multirun and _is_sweep(o)]
    overrides = [o for o in overrides if o not in swept]
    cfg = compose(COMMANDS[command][0], overrides, with_hydra=True)
    derived = []
    # No task typed: the model's (or the data's) is the run's, also in what --cfg job prints.
    if command == "train" and _typed(overrides, "task") is None:
        task = _swept_task(task_name(cfg), overrides, swept) if swept else None
        mismatch = None if task else other_task(cfg)
        if mismatch is not None:
            key, target, task = mismatch
            print(
                f"segtrain: {key}._target_={target} is for task={task}: training task={task}", file=sys.stderr
            )
        if task is not None:
            derived = [f"task={task}"]
            cfg = compose(COMMANDS[command][0], overrides + derived, with_hydra=True)
    if flags & _INSPECT_FLAGS:
        return derived
    check_writable(cfg.paths.log_dir)
    check_run_name(cfg)
    if command == "train" and not multirun:
        check_accelerator(cfg)
        validate(cfg)
    elif command in ("eval", "predict", "export") and not cfg.get("ckpt") and not multirun:
        raise SegtrainError(f"segtrain {command} needs ckpt=PATH (a .ckpt written by segtrain train)")
    # An Optuna study continues in its own sweep directory: finished trials keep their numbers and folders.
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_"))
    resumable_sweep = multirun and sweeper.endswith("ResumableOptunaSweeper")
    may_continue = command == "train" and (bool(cfg.get("resume")) or requeued() or resumable_sweep)
    directory = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    # Where a cluster or torchrun starts every rank with this command line, rank 0 alone checks and claims
    # the run directory; the others write into a shared one only once rank 0 has claimed it.
    if os.environ.get("SLURM_PROCID", "0") != "0" or os.environ.get("RANK", "0") != "0":
        if not multirun and "run_stamp" not in str(unresolved(cfg.hydra.run, "dir")):
            wait_for_claim(directory)
        return derived
    check_fresh_directory(directory, multirun, may_continue)
    if not multirun:
        claim_directory(directory, command, may_continue)
    return derived


def _swept_task(default: str, overrides: list[str], swept: list[str]) -> str | None:
    """The task of the models (or data) a sweep runs, where it is not ``default``: every job then trains
    it. Models of different tasks in one sweep are refused, naming them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    from segtrain.config import compose
    from segtrain.validation import other_task

    for override in swept:
        parsed = OverridesParser.create().parse_override(override)
        if parsed.key_or_group not in ("model", "data") or not isinstance(parsed.value(), ChoiceSweep):
            continue
        tasks = {}
        for choice in parsed.sweep_string_iterator():
            mismatch = other_task(compose("config", [*overrides, f"{parsed.key_or_group}={choice}"]))
            tasks[choice] = mismatch[2] if mismatch else default
        if len(set(tasks.values())) > 1:
            named = ", ".join(f"{choice} (task={task})" for choice, task in tasks.items())
            raise SegtrainError(
                f"{override} sweeps configs of different tasks: {named}. Sweep each task's in its own run"
            )
        task = next(iter(tasks.values()))
        if task != default:
            print(f"segtrain: {override} trains task={task}", file=sys.stderr)
            return task
    return None


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except Exception:
        return False


def run_hydra(command: str, args: list[str]) -> None:
    import hydra

    from segtrain.config import config_dir

    config_name, spec, _ = COMMANDS[command]

    # The command's module (and with it torch and Lightning) is imported when a job runs, so that
    # --cfg, --help and Hydra's own errors print without it.
    def job(cfg):
        from segtrain.noise import through_job_logging

        function = _task_function(spec)
        through_job_logging()
        return report_errors(function, cfg)

    job.__name__ = command
    sys.argv = [f"segtrain {command}", *args]
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(job)()


def list_configs() -> None:
    from segtrain.config import config_dir, config_groups
    from segtrain.help import GROUPS

    groups = config_groups()
    print(f"configs in {config_dir()}")
    order = [*GROUPS, "paths"]
    for group in order + sorted(set(groups) - set(order)):
        if group in groups:
            print(f"  {group + ':':<12} {', '.join(groups[group])}")


def main(argv: list[str] | None = None) -> None:
    from segtrain.noise import quiet

    quiet()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        commands = "\n".join(f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items())
        print(USAGE.format(commands=commands))
        return
    command = args.pop(0) if args and args[0] in COMMANDS else "train"
    if command == "train" and args and not args[0].startswith("-") and "=" not in args[0]:
        close = difflib.get_close_matches(args[0], COMMANDS, n=1)
        fail(
            f"unknown command '{args[0]}'"
            + (f"; did you mean 'segtrain {close[0]}'?" if close else "")
            + f" Commands: {', '.join(COMMANDS)}; overrides are key=value"
        )
    try:
        if command == "list":
            list_configs()
            return
        if {"-h", "--help"} & set(args):
            from segtrain.help import command_help

            print(command_help(command))
            return
        args = [_renamed(arg) for arg in args]
        overrides, flags = _split_args(args)
        if command in _COMPOSE_ONLY and not flags:
            from segtrain.config import compose

            _task_function(COMMANDS[command][1])(compose(COMMANDS[command][0], overrides))
            return
        added = checkpoint_task(command, overrides)
        try:
            added += precheck(command, overrides + added, flags)
        except SegtrainError as err:
            task = added[0].partition("=")[2] if added else None
            if task and f"task={task} is not an option" in str(err):
                raise SegtrainError(
                    f"ckpt={_typed(overrides, 'ckpt')} was trained with task={task}, whose config "
                    f"task/{task}.yaml is not on the config search path; pass hydra.searchpath=[file://DIR] "
                    f"with the DIR that holds task/{task}.yaml"
                ) from None
            raise
    except SegtrainError as err:
        fail(str(err))
    run_hydra(command, _with_overrides(args, added))
