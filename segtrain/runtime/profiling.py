"""What ``segtrain bench`` and ``scripts/compile_gap.py`` record besides the time of each loop: Python's
garbage collections inside the timed steps, what torch.compile did, and the torch profiler over a few steps.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch

from segtrain import compat


class GcPauses:
    """Python's garbage collections inside a block, as (start, seconds, generation); ``timed`` counts those
    that fell in a loop's timed steps: the ``seconds`` before the last ``after`` seconds of the block (what
    ran once after the last step)."""

    def __init__(self):
        self.collections: list[tuple[float, float, int]] = []
        self.started: float | None = None
        self.ended = 0.0

    def record(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started is not None:
            self.collections.append((self.started, time.perf_counter() - self.started, info["generation"]))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self.record)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self.record)
        self.ended = time.perf_counter()

    def timed(self, seconds: float, after: float = 0.0) -> dict:
        until = self.ended - after
        inside = [
            (took, generation)
            for start, took, generation in self.collections
            if until - seconds <= start < until
        ]
        return {
            "collections": len(inside),
            "full_collections": sum(generation == 2 for _, generation in inside),
            "seconds": sum(took for took, _ in inside),
        }


class StepProfiler(pl.Callback):
    """``bench.profile``: the torch profiler over ``steps`` steps after ``warmup`` of one loop; writes the
    operators by self time (the device's on a GPU) to ``profile_NAME.txt`` and a Chrome trace beside it.
    The hand-written loop calls ``start``, ``step`` and ``stop`` itself; segtrain's trainer through the
    callback hooks."""

    def __init__(self, device: torch.device, warmup: int, steps: int, directory: Path, name: str):
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        self.directory, self.name = directory, name
        schedule = torch.profiler.schedule(
            wait=max(warmup - 1, 0), warmup=min(warmup, 1), active=steps, repeat=1
        )
        self.profiler = torch.profiler.profile(
            activities=activities, schedule=schedule, on_trace_ready=self.write
        )

    def write(self, profiler: torch.profiler.profile) -> None:
        table = profiler.key_averages().table(sort_by=self.sort_by, row_limit=50)
        (self.directory / f"profile_{self.name}.txt").write_text(table)
        profiler.export_chrome_trace(str(self.directory / f"trace_{self.name}.json.gz"))

    def start(self) -> None:
        self.profiler.start()

    def step(self) -> None:
        self.profiler.step()

    def stop(self) -> None:
        self.profiler.stop()

    def on_train_start(self, trainer, pl_module):
        self.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step()

    def on_train_end(self, trainer, pl_module):
        self.stop()


def dynamo_counts() -> dict:
    """What torch.compile has done in this process so far: frames compiled, graphs, graph breaks by reason."""
    counters = compat.dynamo_counters
    return {
        "frames_compiled": counters["frames"]["ok"],
        "graphs": counters["stats"]["unique_graphs"],
        "graph_break_reasons": Counter(counters["graph_break"]),
    }


@contextlib.contextmanager
def counting_compiles(totals: dict):
    """Adds what torch.compile does inside the block to ``totals`` (``compile_counts`` reads them)."""
    before = dynamo_counts()
    yield
    for key, after in dynamo_counts().items():
        totals[key] = totals.get(key, type(after)()) + (after - before[key])


def compile_counts(totals: dict) -> dict:
    reasons = totals.get("graph_break_reasons", Counter())
    return {
        "frames_compiled": totals.get("frames_compiled", 0),
        "graphs": totals.get("graphs", 0),
        "graph_breaks": sum(reasons.values()),
        "graph_break_reasons": dict(reasons),
    }


@dataclass
class Rounds:
    """One loop's rounds: the seconds of its timed steps, those of what ran once after them, what
    torch.compile did and the garbage collections inside the timed steps."""

    seconds: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    compiles: dict = field(default_factory=dict)
    pauses: list[dict] = field(default_factory=list)


def time_rounds(loops: dict[str, Callable[[], tuple[float, float]]], rounds: int) -> dict[str, Rounds]:
    """Runs each of ``loops`` (each returning its timed steps' seconds and those after them) once per round;
    the rounds alternate the loops, so that the machine's drift spreads over all of them."""
    timed = {name: Rounds() for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            with counting_compiles(timed[name].compiles), GcPauses() as collections:
                steps, after = loop()
            timed[name].seconds.append(steps)
            timed[name].after.append(after)
            timed[name].pauses.append(collections.timed(steps, after))
    return timed
