"""``segtrain check-data data=... [data.split=...]``: scan a split for what would spoil training.

The scan itself is ``segtrain.data.statistics``; this command prints its report and exits non-zero
on errors, each with the override that fixes it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from segtrain.config import validate
from segtrain.data.statistics import Report, scan_split
from segtrain.errors import SegtrainError


def format_report(report: Report, classes: list[str], ignore_index: int, name: str) -> str:
    total = max(int(report.counts.sum()), 1)
    lines = [
        f"data={name} split={report.split}: {report.pairs} image/mask pairs scanned in {report.seconds:.2f} "
        f"s ({report.images_per_second:.1f} images/s, {report.workers} workers)",
        f"{'id':>4}  {'class':<24} {'pixels %':>9} {'images':>7}",
    ]
    for index, label in enumerate(classes):
        lines.append(
            f"{index:>4}  {label[:24]:<24} {100 * report.counts[index] / total:>9.3f} "
            f"{report.images_with[index]:>7}"
        )
    lines.append(
        f"{ignore_index:>4}  {'(ignored)':<24} {100 * report.counts[ignore_index] / total:>9.3f} "
        f"{report.images_with[ignore_index]:>7}"
    )
    lines += [f"warning: {text}" for text in report.warnings]
    lines += [f"error: {finding.problem}\n  fix: {finding.fix}" for finding in report.errors]
    lines.append("OK: no errors found" if not report.errors else f"{len(report.errors)} error(s) found")
    return "\n".join(lines)


def check_data(cfg: DictConfig) -> Report:
    validate(cfg)
    split = cfg.data.split
    datamodule, report = scan_split(cfg.data, split, cfg.check.workers)
    print(format_report(report, datamodule.classes, datamodule.ignore_index, datamodule.name), flush=True)
    if report.errors:
        raise SegtrainError(
            f"check-data found {len(report.errors)} error(s) in data={datamodule.name} split={split}; "
            "apply the fixes above and run it again"
        )
    return report
