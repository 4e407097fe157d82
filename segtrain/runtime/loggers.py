"""Loggers for the logger/ config group."""

from __future__ import annotations

import csv
import netrc
import os

from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(**kwargs) -> WandbLogger:
    """A WandbLogger that runs offline when no API key is configured or WANDB_MODE=offline."""
    offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_has_api_key()
    return WandbLogger(offline=offline, **kwargs)


class _AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; keep its rows and its header instead.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSVLogger, appending to metrics.csv when a run continues in its own directory
    (a requeued SLURM job) instead of deleting the rows of the epochs before the requeue."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
