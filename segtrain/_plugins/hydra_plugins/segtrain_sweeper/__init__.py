"""segtrain's Optuna sweeper. Hydra only loads sweepers from the ``hydra_plugins`` namespace, so this
module is installed as ``hydra_plugins.segtrain_sweeper`` (see pyproject.toml); the rest of the sweep
logic lives in ``segtrain.sweeps``."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from segtrain.sweeps import requeue_interrupted, trial_outcome

log = logging.getLogger(__name__)


class _ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            self.sampler = self.sampler({name: self._to_grid_sampler_choices(d) for name, d in distributions.items()})
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    direction=self._get_directions()[0], load_if_exists=True)
        interrupted = requeue_interrupted(study)
        remaining = self.n_trials - sum(trial.state.is_finished() for trial in study.trials) + interrupted
        log.info("study %s in %s: %d trials to run of %d", study.study_name, self.storage, max(remaining, 0),
                 self.n_trials)
        while remaining > 0:
            trials = [study.ask() for _ in range(min(remaining, self.n_jobs))]
            overrides = [(*params, f"optuna.trial_id={trial._trial_id}")
                         for params, trial in zip(self._configure_trials(trials, distributions, fixed), trials)]
            # Job directories are numbered by trial, so a resumed study never overwrites an earlier trial's.
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            failed = 0
            for trial, result in zip(trials, returns):
                state, value = trial_outcome(result)
                study.tell(trial, None if value is None else value, state=state)
                failed += state == optuna.trial.TrialState.FAIL
            if failed / len(returns) > self.max_failure_rate:
                for result in returns:
                    result.return_value  # raises the first failure with its traceback
            remaining -= len(trials)
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if completed:
            OmegaConf.save({"name": "optuna", "best_params": study.best_trial.params, "best_value": study.best_value},
                           Path(self.sweep_dir) / "optimization_results.yaml")


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's sweeper, resumable and pruning.

    With a persistent ``storage`` (``hparams_search=optuna`` keeps sqlite in the sweep directory)
    rerunning the same command continues the study up to ``n_trials``: finished trials are kept,
    trials an interruption left running run again. Each trial's job gets ``optuna.trial_id`` so
    :class:`OptunaPruning` can report its val mIoU per epoch, and pruned trials are told PRUNED.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Not the plugin's __init__: all it does is build its own impl.
        self.sweeper = _ResumableOptunaSweeperImpl(**kwargs)
