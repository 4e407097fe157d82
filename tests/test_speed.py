"""The speed paths on CPU: channels_last and torch.compile train and evaluate, checkpoints stay plain,
and ``segtrain bench`` measures on the configured device."""

import json

import pytest
import torch

from segtrain.runtime import profiling
from tests.conftest import TINY, checkpoints, run_cli


@pytest.mark.slow
def test_channels_last_and_compile_train_and_a_plain_eval_loads_the_checkpoint(tmp_path):
    trained = run_cli(*TINY, "runtime.channels_last=true", "runtime.compile.enable=true", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (last,) = checkpoints(tmp_path / "outputs")
    keys = list(torch.load(last, weights_only=True)["state_dict"])
    assert keys and not any("_orig_mod" in key for key in keys)
    (tmp_path / "plain").mkdir()
    plain = run_cli(*TINY, cwd=tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    (plain_last,) = checkpoints(tmp_path / "plain" / "outputs")
    ours, theirs = (torch.load(path, weights_only=True)["state_dict"] for path in (last, plain_last))
    # The same recipe, seed and data: the memory format and compilation change how, not what, it computes.
    assert all(torch.allclose(ours[key], theirs[key], atol=1e-4) for key in theirs)

    evaluated = run_cli(
        "eval",
        f"ckpt={last}",
        "data.dataset.lengths={train:32,val:8,test:8}",
        "data.dataset.image_size=32",
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


@pytest.mark.slow
def test_bench_runs_on_the_configured_device_and_writes_its_fields(tmp_path):
    result = run_cli(
        "bench", *TINY, "bench.steps=4", "bench.warmup=1", "bench.rounds=1", "bench.profile=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "bench").rglob("bench.json")
    bench = json.loads(path.read_text())
    assert bench["device"] == "cpu" and bench["precision"] == "32-true" and bench["steps_timed"] == 3
    assert bench["plain_images_per_s"] > 0 and bench["segtrain_images_per_s"] > 0 and bench["step_tflop"] > 0
    assert abs(bench["ratio"] - bench["segtrain_images_per_s"] / bench["plain_images_per_s"]) < 1e-9
    assert bench["mfu"] is None  # no known peak for a CPU unless bench.peak_tflops is given
    assert bench["torch_compile"]["segtrain"]["frames_compiled"] == 0  # eager: nothing compiled
    # The once-per-run end (curves.png at least) is timed apart from the steps, and the collector is
    # emptied before either loop's clock starts.
    (end,) = bench["segtrain_end_of_training_s"]
    assert end > 0 and any((tmp_path / "outputs" / "bench").rglob("curves.png"))
    assert bench["gc_in_timed_steps"]["plain"][0]["full_collections"] == 0
    # bench.profile=2: both loops' 2 steps after warm-up, the U-Net's convolutions among their operators.
    for loop in ("plain", "segtrain"):
        table = (path.parent / f"profile_{loop}.txt").read_text()
        (steps,) = [line.split() for line in table.splitlines() if line.strip().startswith("ProfilerStep")]
        assert steps[-1] == "2", table  # the row's call count
        assert "aten::convolution_backward" in table
        assert (path.parent / f"trace_{loop}.json.gz").stat().st_size


def test_bench_counts_what_torch_compile_did_in_a_block():
    def halves(x):
        x = x * 2
        torch._dynamo.graph_break()
        return x + 1

    totals = {}
    with profiling.counting_compiles(totals):
        compiled = torch.compile(halves, backend="eager")
        compiled(torch.ones(3))
        compiled(torch.ones(3))  # the cached graphs: nothing more to count
    counts = profiling.compile_counts(totals)
    # One graph before the break and one after it; the frame after the break is a second frame.
    assert counts["graphs"] == 2 and counts["graph_breaks"] == 1, counts
    assert counts["frames_compiled"] == 2 and len(counts["graph_break_reasons"]) == 1, counts


def test_bench_data_times_the_loader_alone(tmp_path):
    result = run_cli(
        "bench", *TINY, "bench.data=true", "bench.data_workers=[0,1]", "bench.steps=3", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "bench").rglob("bench_data.json")
    rates = json.loads(path.read_text())["images_per_s"]
    assert set(rates) == {"0", "1"} and all(rate > 0 for rate in rates.values())
    assert "| workers | loader images/s |" in result.stdout


def test_the_default_thread_count_leaves_out_cores_another_process_keeps_busy(monkeypatch):
    """idle_cores samples /proc/stat: a spinning process takes one core out of the count; a SLURM
    allocation caps the usable cores below the machine's."""
    import subprocess
    import sys
    import time

    from segtrain.runtime.processes import idle_cores, usable_cores

    usable = usable_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert 1 <= idle_cores(0.3) <= max(1, usable - 1)
    finally:
        spinner.kill()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cores() == 1
