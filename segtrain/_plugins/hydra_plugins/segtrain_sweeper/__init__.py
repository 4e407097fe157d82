"""segtrain's Optuna sweeper, registered with Hydra, which loads sweepers only from the
``hydra_plugins`` namespace: the wheel ships this file as ``hydra_plugins/segtrain_sweeper`` (see
pyproject.toml). The logic lives in ``segtrain.runtime.sweeps``."""

from segtrain.runtime.sweeps import ResumableOptunaSweeperBase


class ResumableOptunaSweeper(ResumableOptunaSweeperBase):
    __doc__ = ResumableOptunaSweeperBase.__doc__
