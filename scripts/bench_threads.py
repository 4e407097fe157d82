"""The default run's speed on a machine whose cores other work shares (benchmarks/threads.md).

    python scripts/bench_threads.py [--batches 40] [--output benchmarks/threads.md]

Runs ``segtrain`` (the embedded shapes dataset, the README's first command) for one epoch of ``--batches``
training batches with torch's thread count left to segtrain (``runtime.threads`` unset) and fixed at 1 and
at every core, each on an idle machine and beside one process that keeps a core busy (a Python loop),
and reads the images/s of the epoch's log line and the thread count segtrain chose. The process started
beside the run is started first and left a second to get going, as a user's other work would be.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1"}


def run(overrides: list[str], busy: bool) -> tuple[float, int]:
    """images/s of the epoch and the torch threads the run used."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if spinner:
            time.sleep(1.0)
        with tempfile.TemporaryDirectory() as work:
            result = subprocess.run(
                [sys.executable, "-m", "segtrain", *overrides, "callbacks.progress_bar=null"],
                cwd=work,
                env={
                    key: value for key, value in {**os.environ, **OFFLINE}.items() if key != "OMP_NUM_THREADS"
                },
                capture_output=True,
                text=True,
                timeout=1800,
            )
    finally:
        if spinner:
            spinner.kill()
    output = result.stdout + result.stderr
    if result.returncode:
        raise SystemExit(output[-3000:])
    speed = re.findall(r"([\d.]+) images/s", output)
    # segtrain prints its choice; a thread count set on the command line is the one used.
    threads = re.search(r"torch threads: (\d+)", output) or re.search(
        r"runtime.threads=(\d+)", " ".join(overrides)
    )
    return float(speed[-1]), int(threads.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "threads.md")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    base = [
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
        "trainer.limit_val_batches=0",
    ]
    settings = [("segtrain's default", []), ("runtime.threads=1", ["runtime.threads=1"])]
    settings.append((f"runtime.threads={cores} (every core)", [f"runtime.threads={cores}"]))
    rows = []
    for busy in (False, True):
        for name, extra in settings:
            speed, threads = run([*base, *extra], busy)
            rows.append(f"| {'one core busy' if busy else 'idle'} | {name} | {threads} | {speed:.1f} |")
            print(rows[-1], flush=True)
    text = [
        "# torch's thread count on shared cores",
        "",
        f"Made by `python scripts/bench_threads.py --batches {args.batches}` on {date.today()}: "
        f"{platform.machine()}, {cores} cores, no GPU. `segtrain trainer.max_epochs=1 "
        f"trainer.limit_train_batches={args.batches} trainer.limit_val_batches=0` (the embedded shapes "
        "dataset), images/s of its training epoch, data loading included; 'one core busy' runs it beside a "
        "Python loop started a second before.",
        "",
        "| machine | torch threads | threads used | images/s |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    args.output.write_text("\n".join(text))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
