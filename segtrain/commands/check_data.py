"""``segtrain check-data data=... [data.split=...]``: scan a split for what would spoil training.

The task scans (semantic: ``segtrain.data.statistics``, instance: ``segtrain.data.instance_checks``);
this command prints its report and exits non-zero on errors, each with the fix.
"""

from __future__ import annotations

from omegaconf import DictConfig

from segtrain.errors import SegtrainError
from segtrain.tasks import task_spec
from segtrain.validation import validate


def check_data(cfg: DictConfig):
    """Prints the task's scan of ``data.split`` and returns its report (a ``DataReport``, every task's)."""
    validate(cfg)
    report = task_spec(cfg).check_data(cfg)
    print(report, flush=True)
    if report.errors:
        raise SegtrainError(
            f"check-data found {len(report.errors)} error(s) in data={cfg.data.get('name', '?')} "
            f"split={cfg.data.split}; apply the fixes above and run it again"
        )
    return report
