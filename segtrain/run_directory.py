"""Where a run writes: the run directory's name, its claim by one run, and whether it may be written.

A run never writes over an earlier run's config, checkpoints and metrics, nor over files of the
user's, and two runs started at the same moment never share a directory.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from segtrain.errors import SegtrainError
from segtrain.runtime.processes import process_runs


def check_run_name(cfg: DictConfig) -> None:
    """``run_name`` names a directory under ``paths.log_dir`` and must stay inside it."""
    name = str(cfg.run_name)
    if name in ("", ".") or ".." in Path(name).parts or Path(name).is_absolute():
        raise SegtrainError(
            f"run_name={name!r} is invalid: it must be a relative name inside paths.log_dir, without '..'"
        )


def requeued() -> bool:
    """Whether SLURM restarted this job (``scontrol requeue``, preemption, Lightning's auto-requeue)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


#: Created exclusively in a run directory before anything is written there: the directory is segtrain's,
#: and a second run started at the same moment finds it taken.
RUN_CLAIM = ".segtrain-run"


def check_fresh_directory(directory: Path, multirun: bool, may_continue: bool) -> None:
    """Refuses to start a run in a directory that holds an earlier run, whose config, checkpoints and
    metrics it would overwrite, unless this run continues that one (``may_continue``), and a directory of
    files segtrain did not write (a run writes its predictions, metrics and logs over same-named ones)."""
    if may_continue or not directory.is_dir():
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not multirun and not (directory / RUN_CLAIM).exists():
        foreign = next((path for path in sorted(directory.rglob("*")) if path.is_file()), None)
        if foreign is not None:
            raise SegtrainError(
                f"{key}={directory} already holds files segtrain did not write (e.g. {foreign}); a run "
                f"writes its outputs there and would overwrite same-named ones. Pass a new or empty {key}"
            )
    pattern = "*/.hydra/config.yaml" if multirun else ".hydra/config.yaml"
    earlier = next(directory.glob(pattern), None) or next(directory.glob("checkpoints/*.ckpt"), None)
    if earlier is not None:
        raise SegtrainError(
            f"{directory} already holds a run ({earlier.relative_to(directory)}); segtrain does not write "
            f"over it. Choose another {key}, or pass resume=true to continue that run"
        )


def claim_directory(directory: Path, command: str, may_continue: bool) -> None:
    """Creates ``RUN_CLAIM`` in ``directory`` exclusively, before anything else is written there; a run
    that continues the directory's earlier run takes the claim over once that run has stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    claim = directory / RUN_CLAIM
    record = json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname()})
    try:
        with open(claim, "x") as created:
            created.write(record)
        return
    except FileExistsError:
        pass
    try:
        holder = json.loads(claim.read_text())
    except (OSError, ValueError):
        holder = {}
    alive = holder.get("host") == socket.gethostname() and process_runs(holder.get("pid"))
    if may_continue and not alive:
        claim.write_text(record)
        return
    if not alive:
        raise SegtrainError(
            f"hydra.run.dir={directory} belongs to an earlier segtrain {holder.get('command', 'run')} that "
            "no longer runs; segtrain does not write over it. Choose another hydra.run.dir, or pass "
            "resume=true to continue that run"
        )
    raise SegtrainError(
        f"hydra.run.dir={directory} was claimed by another segtrain {holder.get('command', 'run')} (pid "
        f"{holder.get('pid', '?')} on {holder.get('host', '?')}) a moment ago; two runs in one directory "
        "would mix their metrics and checkpoints. Pass another hydra.run.dir"
    )


def wait_for_claim(directory: Path, timeout_s: float = 120.0) -> None:
    """Waits until rank 0 has claimed the run directory this rank shares with it."""
    deadline = time.monotonic() + timeout_s
    while not (directory / RUN_CLAIM).exists():
        if time.monotonic() > deadline:
            raise SegtrainError(
                f"this rank waited {timeout_s:.0f} s for rank 0 to claim hydra.run.dir={directory}; start "
                "rank 0 with the same hydra.run.dir"
            )
        time.sleep(0.1)


def check_writable(directory: str | os.PathLike, key: str = "paths.log_dir") -> None:
    """Fail before a run starts when its output directory cannot be created or written."""
    path = Path(directory).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SegtrainError(
            f"output directory {path} is not writable ({existing} is not a directory); "
            f"set {key} to a writable directory"
        )
    try:  # os.access says yes to root everywhere, /proc included: try for real, leaving nothing behind
        os.rmdir(tempfile.mkdtemp(prefix=".segtrain-write-check-", dir=existing))
    except OSError as err:
        raise SegtrainError(
            f"output directory {path} is not writable ({existing}: {err.strerror}); set {key} to a writable "
            "directory"
        ) from None
