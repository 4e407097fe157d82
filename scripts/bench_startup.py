"""How long the light commands take from start to exit, and what they import (benchmarks/startup.md).

    python scripts/bench_startup.py [--repeats 5] [--output benchmarks/startup.md]

Each command runs ``--repeats`` times in a fresh process in an empty directory; the table gives the median
wall time beside ``python -c "import segtrain.cli"`` measured in the same run, and which of the heavy
libraries (Lightning, optuna, torchvision, torch) the command imported, read from ``python -X importtime``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}
HEAVY = ("pytorch_lightning", "optuna", "torchvision", "torch")

#: (what it is, the arguments after ``python``)
COMMANDS = (
    ("import segtrain.cli (reference)", ["-c", "import segtrain.cli"]),
    ("segtrain --help", ["-m", "segtrain", "--help"]),
    ("segtrain train --help", ["-m", "segtrain", "train", "--help"]),
    ("segtrain list", ["-m", "segtrain", "list"]),
    ("segtrain train --cfg job", ["-m", "segtrain", "train", "--cfg", "job"]),
    ("segtrain eval ckpt=x --cfg job", ["-m", "segtrain", "eval", "ckpt=x", "--cfg", "job"]),
    ("error: unknown model", ["-m", "segtrain", "model=nope"]),
    ("error: bad value", ["-m", "segtrain", "trainer.max_epochs=-3"]),
    ("error: eval without ckpt", ["-m", "segtrain", "eval"]),
    ("error: model of another task", ["-m", "segtrain", "task=semantic", "model=mask_rcnn"]),
    ("error: a task's own rule", ["-m", "segtrain", "inference.mode=slide", "inference.crop_size=null"]),
    ("error: data.root not set", ["-m", "segtrain", "data=camvid"]),
)


def run(args: list[str], work: str, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, *args],
        cwd=work,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=300,
    )


def imported(stderr: str) -> list[str]:
    """The heavy top-level packages in ``-X importtime``'s report."""
    names = {
        line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time")
    }
    return [name for name in HEAVY if name in names]


def measure(args: list[str], repeats: int) -> tuple[float, int, list[str]]:
    with tempfile.TemporaryDirectory() as work:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = run(args, work)
            times.append(time.perf_counter() - started)
        heavy = imported(run(args, work, importtime=True).stderr)
    return statistics.median(times), result.returncode, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "startup.md")
    options = parser.parse_args()
    rows = []
    for name, args in COMMANDS:
        seconds, code, heavy = measure(args, options.repeats)
        rows.append((name, seconds, code, heavy))
        print(f"{name:<34} {seconds:6.2f} s  exit {code}  imports: {', '.join(heavy) or '-'}", flush=True)
    reference = rows[0][1]
    lines = [
        "# Light commands: start-up to exit",
        "",
        f"{date.today()}, {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        f"`python scripts/bench_startup.py --repeats {options.repeats}`: the median of "
        f"{options.repeats} runs, each a fresh process in an empty directory; the heavy libraries "
        "each command imported are read from `python -X importtime`.",
        "",
        "| command | seconds | x import segtrain.cli | exit | heavy imports |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, code, heavy in rows:
        lines.append(
            f"| {name} | {seconds:.2f} | {seconds / reference:.1f} | {code} | {', '.join(heavy) or '-'} |"
        )
    options.output.write_text("\n".join(lines) + "\n")
    print(f"written to {options.output}")


if __name__ == "__main__":
    main()
