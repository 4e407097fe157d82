"""segtrain's Optuna sweeper, registered with Hydra, which loads sweepers only from the
``hydra_plugins`` namespace: the wheel ships this file as ``hydra_plugins/segtrain_sweeper`` (see
pyproject.toml). Hydra imports every plugin module whenever it composes a config, so this one imports
optuna and Lightning only when a sweep builds the sweeper; the logic lives in ``segtrain.runtime.sweeps``."""

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's sweeper, resumable and pruning.

    With a persistent ``storage`` (``hparams_search=optuna`` keeps sqlite in the sweep directory)
    rerunning the same command continues the study up to ``n_trials``: finished trials are kept,
    trials an interruption left running run again. Each trial's job gets ``optuna.trial_id`` so
    ``segtrain.runtime.sweeps.OptunaPruning`` can report its score per epoch, and pruned trials are told
    PRUNED.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Not the plugin's __init__: all it does is build its own impl.
        from segtrain.runtime.sweeps import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**kwargs)
