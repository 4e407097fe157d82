"""Processes and cores: whether a recorded process still runs, and how many cores this one may use."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


def process_runs(pid) -> bool:
    """True while process ``pid`` of this host runs (another user's process included)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers) and by
    ``SLURM_CPUS_PER_TASK`` (a SLURM allocation), not the machine's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cores


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) clock ticks of each of ``cpus`` since boot, from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(field) for field in fields]
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks[:8]))  # idle + iowait; up to steal
    return times


def idle_cores(sample_s: float = 0.1) -> int:
    """How many of the ``usable_cores`` other processes leave idle, sampled over ``sample_s`` while this
    process waits, at least 1. Threads that wait on each other collapse when one of them shares a busy
    core: on 2 cores with one busy, 2 torch threads trained at 2 images/s and 1 thread at 11-15."""
    usable = usable_cores()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    try:
        before = _cpu_times(cpus)
        time.sleep(sample_s)
        after = _cpu_times(cpus)
    except (OSError, ValueError, IndexError):
        return usable
    idle = sum(
        (after[cpu][0] - before[cpu][0]) / max(after[cpu][1] - before[cpu][1], 1)
        for cpu in after
        if cpu in before
    )
    return max(1, min(usable, round(idle))) if after else usable
