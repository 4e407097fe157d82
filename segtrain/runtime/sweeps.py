"""Sweeps: a summary of every multirun, and Optuna studies that resume and prune.

``segtrain -m optimizer.lr=0.01,0.001`` (grid), ``... optimizer.lr='interval(1e-4,1e-2)'`` with a random
sweeper, and ``segtrain -m hparams_search=optuna`` all end with the same table, read back from the
job directories, so a sweep that ran on SLURM or was resumed is summarised the same way.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import optuna
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from segtrain.compat import OptunaSweeperImpl, create_params_from_overrides, fail_trial, job_outcome, trial_id
from segtrain.errors import SegtrainError
from segtrain.runtime.trainer import METRICS_FILE

log = logging.getLogger(__name__)

#: Written by ``OptunaPruning`` into the directory of a pruned trial.
PRUNED_FILE = "pruned.json"


def best_value(metrics: dict) -> tuple[str, float]:
    """The score a finished job monitored and the best value it reached (jobs written before tasks were
    named monitored val/mIoU)."""
    monitor = metrics.get("monitor", "val/mIoU")
    return monitor, metrics[f"best_val_{monitor.partition('/')[2]}"]


def job_results(sweep_dir: Path) -> list[dict]:
    """Every job under ``sweep_dir``: its number, overrides, status and best val mIoU."""
    jobs = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        if not job_dir.name.isdigit():
            continue
        job = {"job": int(job_dir.name), "overrides": list(OmegaConf.load(overrides_file)), "value": None}
        if (job_dir / METRICS_FILE).is_file():
            monitor, value = best_value(json.loads((job_dir / METRICS_FILE).read_text()))
            job.update(status="complete", value=value, monitor=monitor)
        elif (job_dir / PRUNED_FILE).is_file():
            job.update(status="pruned", value=json.loads((job_dir / PRUNED_FILE).read_text())["value"])
        else:
            job["status"] = "failed"
        jobs.append(job)
    return sorted(jobs, key=lambda job: job["job"])


def swept(jobs: Sequence[dict]) -> set[str]:
    """The override keys whose values differ between jobs: the sweep's parameters."""
    values: dict[str, set] = {}
    for job in jobs:
        for override in job["overrides"]:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return {key for key, seen in values.items() if len(seen) > 1 or len(jobs) == 1}


def summarize(sweep_dir: Path) -> tuple[str, dict]:
    jobs = job_results(sweep_dir)
    keys = swept(jobs) - {"optuna.trial_id"}
    counts = {
        status: sum(job["status"] == status for job in jobs) for status in ("complete", "pruned", "failed")
    }
    lines = [
        f"sweep {sweep_dir}: {len(jobs)} trials ("
        + ", ".join(f"{count} {status}" for status, count in counts.items())
        + ")",
        f"{'trial':>5}  {'best val':>13}  {'status':<8}  parameters",
    ]
    for job in jobs:
        value = f"{job['value'] * 100:13.2f}" if job["value"] is not None else f"{'-':>13}"
        params = " ".join(o for o in job["overrides"] if o.partition("=")[0] in keys)
        lines.append(f"{job['job']:>5}  {value}  {job['status']:<8}  {params}")
    complete = [job for job in jobs if job["status"] == "complete"]
    best = max(complete, key=lambda job: job["value"]) if complete else None
    summary = {"trials": len(jobs), **counts, "best": None}
    if best:
        best_params = {
            o.partition("=")[0]: o.partition("=")[2] for o in best["overrides"] if o.partition("=")[0] in keys
        }
        summary["best"] = {"trial": best["job"], "value": best["value"], "params": best_params}
        lines.append(
            f"best: trial {best['job']}, {best['monitor']} {best['value'] * 100:.2f}, "
            + " ".join(f"{key}={value}" for key, value in best_params.items())
        )
    else:
        lines.append("best: none, no trial completed")
    return "\n".join(lines), summary


class SweepSummary(Callback):
    """Prints and writes (``summary.json``) the summary table at the end of every multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra sets its runtime config per job only; the sweep directory's ${run_name} needs it first.
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table, summary = summarize(sweep_dir)
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(table)


def trial_outcome(result: JobReturn) -> tuple[optuna.trial.TrialState, float | None]:
    if result.status == JobStatus.COMPLETED:
        value = result.return_value
        if value is None:
            log.warning("a trial returned no val mIoU (did it validate?); counted as failed")
            return optuna.trial.TrialState.FAIL, None
        return optuna.trial.TrialState.COMPLETE, float(value)
    if isinstance(job_outcome(result), optuna.TrialPruned):
        return optuna.trial.TrialState.PRUNED, None
    log.warning("trial failed: %r", job_outcome(result))
    return optuna.trial.TrialState.FAIL, None


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left running by an interrupted sweep are failed and their parameters queued to run
    again; returns how many."""
    interrupted = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in interrupted:
        fail_trial(study, trial)
        study.enqueue_trial(trial.params)
        log.info("trial %d was interrupted; its parameters run again", trial.number)
    return len(interrupted)


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments)
        )
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            self.sampler = self.sampler(
                {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            )
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            direction=self._get_directions()[0],
            load_if_exists=True,
        )
        interrupted = requeue_interrupted(study)
        remaining = self.n_trials - sum(trial.state.is_finished() for trial in study.trials) + interrupted
        log.info(
            "study %s in %s: %d trials to run of %d",
            study.study_name,
            self.storage,
            max(remaining, 0),
            self.n_trials,
        )
        while remaining > 0:
            trials = [study.ask() for _ in range(min(remaining, self.n_jobs))]
            overrides = [
                (*params, f"optuna.trial_id={trial_id(trial)}")
                for params, trial in zip(self._configure_trials(trials, distributions, fixed), trials)
            ]
            # Job directories are numbered by trial, so a resumed study never overwrites an earlier trial's.
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            failed = []
            for trial, result in zip(trials, returns):
                state, value = trial_outcome(result)
                study.tell(trial, value, state=state)
                if state == optuna.trial.TrialState.FAIL:
                    failed.append(result)
            if len(failed) / len(returns) > self.max_failure_rate:
                failed[0].return_value  # raises the first failure with its traceback
                raise SegtrainError(
                    f"{len(failed)} of {len(returns)} trials returned no val mIoU, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows"
                )
            remaining -= len(trials)
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if completed:
            OmegaConf.save(
                {"name": "optuna", "best_params": study.best_trial.params, "best_value": study.best_value},
                Path(self.sweep_dir) / "optimization_results.yaml",
            )


class OptunaPruning(pl.Callback):
    """Reports val mIoU to the trial after every validation and stops a trial the pruner rejects.

    Every rank stops together; the trial then ends with ``optuna.TrialPruned`` after training, so
    the sweeper records it as pruned. Without ``trial_id`` (not run by the sweeper) it does nothing.
    """

    def __init__(
        self,
        storage: str | None,
        study_name: str | None,
        trial_id: int | None,
        pruner: optuna.pruners.BasePruner,
        monitor: str = "val/mIoU",
        directory: str | None = None,
    ):
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.pruner = pruner
        self.monitor = monitor
        self.directory = Path(directory) if directory else None
        self.pruned_at: tuple[int, float] | None = None

    @functools.cached_property
    def trial(self) -> optuna.trial.Trial:
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
        return optuna.trial.Trial(study, self.trial_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.trial_id is None or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        prune = False
        if trainer.is_global_zero:
            self.trial.report(value, step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            self.pruned_at = (trainer.current_epoch, value)
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned_at is None or not trainer.is_global_zero:
            return
        epoch, value = self.pruned_at
        if self.directory is not None:
            (self.directory / PRUNED_FILE).write_text(json.dumps({"epoch": epoch, "value": value}))
        raise optuna.TrialPruned(f"pruned after epoch {epoch} at {self.monitor} {value:.4f}")
