"""Third-party messages that are not the user's business, silenced in one place, each with its reason.

Only these exact messages are filtered; every other warning stays visible. ``quiet()`` runs first thing
in each segtrain process (the CLI, and each extra DDP rank).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Iterator

#: (message pattern, warning category, why it is noise for a segtrain user)
WARNINGS = [
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        Warning,
        "raised inside Lightning's own _pytree helper on every run; nothing a user can change",
    ),
    (
        r"The `srun` command is available on your system but is not used",
        Warning,
        "Lightning says it whenever srun is installed, on every local run; segtrain's cluster jobs go "
        "through hydra/launcher=slurm, whose submitit jobs run under srun",
    ),
    (
        r"The dirpath has changed from",
        Warning,
        "resume=true continues in a new run directory by design; the resumed run's best.ckpt tracks its "
        "own epochs, which segtrain prints when it resumes",
    ),
    (
        r"`ModelCheckpoint\(monitor='val/[\w/@.]+'\)` could not find the monitored key",
        Warning,
        "a run that never validates (trainer.limit_val_batches=0, ...) has no score to choose a best "
        "checkpoint by; segtrain says so, and where the last checkpoint is, when training ends",
    ),
    (
        r"`torch\.jit\.\w+` is deprecated",
        Warning,
        "export format=torchscript and predict ckpt=model.pt ask for TorchScript, which only torch.jit "
        "writes and reads",
    ),
]

#: Silenced only while ``exporting()``: (message pattern, why it is noise while segtrain exports).
EXPORT_WARNINGS = [
    (
        r"might cause the trace to be incorrect|results are registered as constants in the trace",
        "the tracer warns that Python-side sizes and counts become constants; export runs the exported "
        "model against PyTorch at two sizes, which is the check those warnings ask for (a detector printed "
        "37 of them)",
    ),
    (r"To copy construct from a tensor", "raised inside torchvision's detection code while it is traced"),
    (
        r"Exporting aten::index operator of advanced indexing|Constant folding - Only steps=1",
        "how the exporter lowers an op, not something the user can change",
    ),
]

#: Lightning's info lines that advertise rather than inform: (pattern, why).
LOG_LINES = [
    (r"Tip: For seamless cloud logging", "an advertisement for a hosted service, printed on every run"),
    (
        r"Trainer already configured with model summary callbacks",
        "callbacks.model_summary replaces Lightning's summary on purpose (it leaves out uncounted FLOPs)",
    ),
]

#: Loggers whose messages below a level are internal progress: (name, level kept, why).
LOGGERS = [
    ("onnxscript", logging.WARNING, "the ONNX optimizer's progress (nodes removed, initialisers merged)"),
    ("onnx_ir", logging.WARNING, "the same optimizer's passes"),
    (
        "torch.export",
        logging.CRITICAL,
        "logs its tracing failures at ERROR; export says in one line why it falls back to the other exporter",
    ),
]

#: The loggers Lightning's rank_zero_info writes through.
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropLines(logging.Filter):
    def __init__(self, patterns: list[str]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet() -> None:
    for pattern, category, _ in WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}", category=category)
    for name, level, _ in LOGGERS:
        logging.getLogger(name).setLevel(level)
    line_filter = _DropLines([pattern for pattern, _ in LOG_LINES])
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(line_filter)


def through_job_logging() -> None:
    """Lightning's lines go where segtrain's go: the console and the run's log file. Lightning gives its
    logger a handler of its own when it is imported before logging is configured (as when a checkpoint is
    read before Hydra starts), and leaves it to the root logger otherwise; this makes it the latter."""
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    """The ``EXPORT_WARNINGS`` silenced for the duration of an export; every other warning stays."""
    with warnings.catch_warnings():
        for pattern, _ in EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*(?:{pattern})")
        yield
