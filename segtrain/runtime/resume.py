"""Which checkpoint a run continues from (``resume=``, a requeued SLURM job) and what changed since."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from segtrain.errors import SegtrainError
from segtrain.run_directory import requeued
from segtrain.runtime.checkpoint import check_targets, read_metadata, upgraded
from segtrain.runtime.trainer import output_dir

log = logging.getLogger(__name__)


def find_resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, or None for a fresh run.

    - A job SLURM restarted (``scontrol requeue``, preemption, its time limit), or a run told
      ``resume=true`` whose own directory holds checkpoints, continues from the newest of them:
      Lightning's ``hpc_ckpt_N.ckpt`` (saved on SLURM's requeue signal) or ``last.ckpt``.
    - Otherwise ``resume=true`` takes the newest ``last.ckpt`` of the earlier runs beside this one,
      leaving out debug runs (``debug=...``), and ``resume=PATH`` takes that file.
    """
    here = output_dir(cfg)
    resume = cfg.get("resume")
    own = [*here.glob("hpc_ckpt_*.ckpt"), *here.glob("checkpoints/last.ckpt")]
    if own and (requeued() or resume is True):
        checkpoint = max(own, key=lambda path: path.stat().st_mtime)
        log.info("%s: resuming from %s", "this run was requeued" if requeued() else "resume=true", checkpoint)
        return str(checkpoint)
    if not resume:
        return None
    if isinstance(resume, str):
        return resume
    candidates = [last for last in here.parent.glob("*/checkpoints/last.ckpt") if last.parents[1] != here]
    debug_runs = [last for last in candidates if read_metadata(last, "resume").get("debug_run")]
    runs = [last for last in candidates if last not in debug_runs]
    if runs:
        checkpoint = max(runs, key=lambda path: path.stat().st_mtime)
        log.info("resuming from %s", checkpoint)
        return str(checkpoint)
    skipped = f" ({len(debug_runs)} debug runs left out)" if debug_runs else ""
    raise SegtrainError(
        f"resume=true found no checkpoints/last.ckpt of an earlier run under {here.parent}{skipped}; "
        "start without resume, or pass resume=/path/to/last.ckpt"
    )


def describe_resume(checkpoint: str, stored: dict | None, cfg: DictConfig) -> None:
    """Says which settings differ from ``stored``, the resolved config of the run being continued, and
    which of them a resume cannot change."""
    if not stored:
        return
    changed = config_changes(stored, OmegaConf.to_container(cfg, resolve=True))
    if not changed:
        log.info("resuming %s with the same settings", checkpoint)
        return
    lines = [f"resuming {checkpoint}; settings that differ from that run:"]
    for key, before, after in changed:
        kept = key.split(".")[0] in ("optimizer", "scheduler")
        lines.append(
            f"  {key}: {before!r} -> {after!r}"
            + (" (kept as before: the optimizer and scheduler state are restored)" if kept else "")
        )
    log.warning("\n".join(lines))


_NOT_RECIPE = (
    "resume",
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "command",
    "task_name",
    "trainer.default_root_dir",
)


def config_changes(before: dict, after: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    changes = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        if any(path == skip or path.startswith(skip + ".") for skip in _NOT_RECIPE):
            continue
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, path + ".")
        elif old != new:
            changes.append((path, old, new))
    return changes


def resolve_resume(cfg: DictConfig) -> None:
    """Replaces ``resume`` with the checkpoint to continue from (null for a fresh run), so that every
    rank continues from the same file, and reattaches a wandb logger to the run it continues."""
    checkpoint = find_resume_checkpoint(cfg)
    cfg.resume = checkpoint
    if not checkpoint:
        return
    metadata = read_metadata(checkpoint, "resume")
    if metadata.get("config"):
        # The run continues with this command's config, but a checkpoint naming callables segtrain cannot
        # name was crafted or comes from elsewhere: it is not resumed either.
        check_targets(OmegaConf.create(upgraded(metadata["config"])), cfg, checkpoint, "resume")
    describe_resume(checkpoint, upgraded(metadata.get("resolved_config")), cfg)
    wandb_id = metadata.get("wandb_id")
    if wandb_id and OmegaConf.select(cfg, "logger.wandb"):
        cfg.logger.wandb.id = wandb_id
        cfg.logger.wandb.resume = "allow"
