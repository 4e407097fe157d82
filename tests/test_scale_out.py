"""DDP under Hydra multirun and pytest, resumable Optuna sweeps with pruning, crash-safe resume and
wandb tracking: each against the real thing (gloo DDP, sqlite studies, kill -9, offline wandb)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import OFFLINE_ENV, TINY, run_cli
from omegaconf import OmegaConf

from segtrain import cli
from segtrain.runtime.checkpoint import read_metadata

#: TINY with 7 validation images: an odd count that 2 ranks cannot split evenly.
SMALL = [arg for arg in TINY if not arg.startswith("data.dataset.lengths")] + [
    "data.dataset.lengths={train:32,val:7,test:8}",
    "data.num_workers=0",
]


def start_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segtrain", *args],
        cwd=cwd,
        env={**os.environ, **OFFLINE_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"finished before {path} appeared:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def kill_9(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
def test_ddp_multirun_inside_pytest_runs_each_job_on_all_ranks(tmp_path, monkeypatch):
    """In this pytest process, where Lightning would re-run pytest's command line for rank 1."""
    monkeypatch.chdir(tmp_path)
    cli.main(["-m", "trainer=ddp_cpu", *SMALL, "optimizer.lr=0.001,0.002", "hydra.sweep.dir=sweep"])

    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no stray run directories
    for job, lr in (("0", 0.001), ("1", 0.002)):
        ranks = [
            json.loads((tmp_path / "sweep" / job / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)
        ]
        assert [rank["world_size"] for rank in ranks] == [2, 2]
        assert ranks[0]["pid"] != ranks[1]["pid"]
        assert ranks[0]["config_sha256"] == ranks[1]["config_sha256"]
        assert OmegaConf.load(tmp_path / "sweep" / job / "ranks" / "job.yaml").config.optimizer.lr == lr
    assert (
        json.loads((tmp_path / "sweep/0/ranks/rank0.json").read_text())["config_sha256"]
        != json.loads((tmp_path / "sweep/1/ranks/rank0.json").read_text())["config_sha256"]
    )
    assert json.loads((tmp_path / "sweep/summary.json").read_text())["complete"] == 2
    assert "MASTER_PORT" not in os.environ and "LOCAL_RANK" not in os.environ

    # The 2-process validation equals a 1-process evaluation of the same weights: the confusion
    # matrices of both ranks were summed, and no image was counted twice.
    ddp = json.loads((tmp_path / "sweep/0/val_metrics.json").read_text())
    result = run_cli("eval", "ckpt=sweep/0/checkpoints/last.ckpt", "data.num_workers=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs/eval").glob("*/metrics.json")
    single = json.loads(metrics_file.read_text())
    assert sum(row["pixels"] for row in ddp["per_class"].values()) == 7 * 32 * 32
    assert {k: v["pixels"] for k, v in ddp["per_class"].items()} == {
        k: v["pixels"] for k, v in single["per_class"].items()
    }
    for key in ("mIoU", "mDice", "aAcc", "mAcc", "fwIoU"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)


@pytest.mark.slow
def test_effective_batch_size_and_linear_lr_scaling(tmp_path):
    result = run_cli(
        *SMALL,
        "trainer.accumulate_grad_batches=2",
        "auto_scale_lr.enable=true",
        "auto_scale_lr.base_batch_size=4",
        "optimizer.lr=0.001",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "effective batch size 16 = 8 per process x 1 processes x 2 accumulated" in log
    assert "lr scaled by 16/4 = 4 to 0.004" in log


OPTUNA = ["-m", "hparams_search=optuna", *SMALL, "hydra.sweep.dir=sweep"]


@pytest.mark.slow
def test_optuna_sweep_resumes_after_interruption(tmp_path):
    sweep = tmp_path / "sweep"
    # Trials of a few seconds, so that the kill lands inside one.
    command = [arg.replace("train:32,", "train:256,") for arg in OPTUNA] + ["hydra.sweeper.n_trials=4"]
    process = start_cli(*command, cwd=tmp_path)
    wait_for(sweep / "2" / ".hydra" / "overrides.yaml", process)
    kill_9(process)
    finished = {path: path.stat().st_mtime_ns for path in sweep.glob("*/val_metrics.json")}
    assert len(finished) >= 2

    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [trial.state for trial in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4 and len(states) == 5
    (interrupted,) = [i for i, state in enumerate(states) if state == optuna.trial.TrialState.FAIL]
    assert interrupted == len(finished)
    assert (
        study.trials[interrupted + 1].params == study.trials[interrupted].params
    )  # its parameters ran again
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # finished trials were kept
    assert "5 trials (4 complete, 0 pruned, 1 failed)" in result.stdout
    best = json.loads((sweep / "summary.json").read_text())["best"]
    assert best["value"] == pytest.approx(study.best_value)
    assert set(best["params"]) == {"optimizer.lr", "optimizer.weight_decay"}


@pytest.mark.slow
def test_optuna_prunes_hopeless_trials(tmp_path):
    result = run_cli(
        *OPTUNA,
        "hydra.sweeper.n_trials=1",
        "trainer.max_epochs=3",
        "~callbacks.optuna_pruning.pruner",
        "+callbacks.optuna_pruning.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.99}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{tmp_path / 'sweep/optuna.db'}")
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert json.loads((tmp_path / "sweep/0/pruned.json").read_text())["epoch"] == 0
    assert read_metadata(tmp_path / "sweep/0/checkpoints/last.ckpt")["config"]["trainer"]["max_epochs"] == 3
    assert (
        torch.load(tmp_path / "sweep/0/checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
    )  # stopped early
    assert "1 trials (0 complete, 1 pruned, 0 failed)" in result.stdout


@pytest.mark.slow
def test_grid_multirun_prints_the_summary(tmp_path):
    result = run_cli("-m", *SMALL, "optimizer.lr=0.001,0.01", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trials (2 complete, 0 pruned, 0 failed)" in result.stdout
    values = {
        job: json.loads((tmp_path / f"sweep/{job}/val_metrics.json").read_text())["best_val_mIoU"]
        for job in (0, 1)
    }
    best_job = max(values, key=values.get)
    best = json.loads((tmp_path / "sweep/summary.json").read_text())["best"]
    assert best == {
        "trial": best_job,
        "value": values[best_job],
        "params": {"optimizer.lr": ["0.001", "0.01"][best_job]},
    }
    assert result.stdout.splitlines()[-1].startswith(
        f"best: trial {best_job}, val/mIoU {values[best_job] * 100:.2f}"
    )


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_continues(tmp_path):
    args = [arg for arg in SMALL if not arg.startswith("data.dataset.lengths")]
    args += ["data.dataset.lengths={train:512,val:8,test:8}", "trainer.max_epochs=3"]
    process = start_cli(*args, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    time.sleep(1.0)  # into the next epoch
    kill_9(process)
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    saved_epoch = torch.load(last, weights_only=True)["epoch"]
    assert saved_epoch < 2, "the run finished before it was killed"

    result = run_cli(*args, "resume=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {last}" in result.stdout + result.stderr
    runs = sorted(p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    resumed = runs[-1]
    assert json.loads((resumed / "val_metrics.json").read_text())["epochs"] == 3
    epochs = {
        int(line.split(",")[0])
        for line in (resumed / "metrics.csv").read_text().splitlines()[1:]
        if line.split(",")[0]
    }
    assert min(epochs) == saved_epoch + 1  # it continued, and did not start again from epoch 0


ATOMIC_WRITER = """
import sys, torch
from segtrain.runtime.checkpoint import AtomicCheckpointIO
io = AtomicCheckpointIO()
step = 0
while True:
    io.save_checkpoint({"step": step, "weights": torch.full((16, 1024, 1024), float(step))}, sys.argv[1])
    print(step, flush=True)
    step += 1
"""


@pytest.mark.slow
def test_a_checkpoint_killed_mid_write_is_never_torn(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    for delay in (0.5, 1.3, 2.1):
        writer = subprocess.Popen(
            [sys.executable, "-c", ATOMIC_WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert writer.stdout.readline()  # one checkpoint complete
        time.sleep(delay)
        kill_9(writer)
        checkpoint = torch.load(path, weights_only=True)
        assert torch.all(checkpoint["weights"] == checkpoint["step"])


@pytest.mark.slow
def test_wandb_offline_logs_config_overlays_groups_and_reattaches_on_resume(tmp_path):
    result = run_cli("-m", "logger=wandb", *SMALL, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "sweep/0/wandb").glob("offline-run-*")
    run_id = run_dir.name.rsplit("-", 1)[1]
    assert list(run_dir.glob("files/media/images/val/overlays_*.png"))
    record = next(run_dir.glob("*.wandb")).read_bytes()
    assert f"{tmp_path.name}/sweep".encode() in record  # the sweep's group
    assert b"optimizer" in record and b"val/mIoU" in record  # the full config and the metrics
    assert read_metadata(tmp_path / "sweep/0/checkpoints/last.ckpt")["wandb_id"] == run_id

    result = run_cli(
        "logger=wandb", *SMALL, "trainer.max_epochs=2", "resume=sweep/0/checkpoints/last.ckpt", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (resumed,) = (tmp_path / "outputs").glob("*/*/wandb/offline-run-*")
    assert resumed.name.endswith(run_id)


@pytest.mark.parametrize("preset", ["ddp", "ddp_multinode", "ddp_cpu"])
def test_trainer_presets_compose_and_validate(preset):
    from segtrain.config import compose
    from segtrain.validation import validate

    cfg = compose("config", [f"trainer={preset}"])
    validate(cfg)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices >= 2


@pytest.mark.slow
def test_eval_names_the_training_only_strategy(trained_run):
    result = run_cli("eval", f"ckpt={trained_run['best']}", "trainer=ddp_cpu", cwd=trained_run["cwd"])
    assert result.returncode == 2
    assert "trainer.strategy=ddp is for training" in result.stderr and "trainer=cpu" in result.stderr


def start_node(node: int, port: int, *args: str, cwd: Path) -> subprocess.Popen:
    """One node of a two-node job of one process each, started as torchrun starts a node's process: the
    same command line everywhere, the ranks and the rendezvous in the environment (loopback, gloo)."""
    ranks = {"RANK": node, "GROUP_RANK": node, "NODE_RANK": node, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 1}
    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": 2, **ranks}
    environment["TORCHELASTIC_RUN_ID"] = f"segtrain-test-{port}"
    return start_cli(*args, cwd=cwd, env={key: str(value) for key, value in environment.items()})


def start_nodes(*args: str, cwd: Path) -> list[subprocess.Popen]:
    """Node 1 a second before node 0, so that it reaches the shared run directory first."""
    port = free_port()
    second = start_node(1, port, *args, cwd=cwd)
    time.sleep(1.0)
    return [start_node(0, port, *args, cwd=cwd), second]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def finish(nodes: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    codes = [node.wait(timeout=timeout) for node in nodes]
    for node in nodes:
        node.output = node.stdout.read()
    return codes


@pytest.mark.slow
def test_two_nodes_train_as_one_job_stop_together_on_one_sigterm_and_resume(tmp_path):
    """trainer.num_nodes=2 of one gloo process each: both ranks train on one config, the validation equals
    a single-process eval of the same checkpoint, a SIGTERM to one node stops both (143, checkpoint
    intact), and both nodes given resume=true continue from it."""
    two_nodes = [*SMALL, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2"]
    run = tmp_path / "run"
    nodes = start_nodes(*two_nodes, "trainer.max_epochs=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert finish(nodes) == [0, 0], [node.output[-2000:] for node in nodes]
    records = [json.loads((run / "ranks" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["node_rank"] for record in records] == [0, 1]
    assert records[0]["config_sha256"] == records[1]["config_sha256"]
    validated = json.loads((run / "val_metrics.json").read_text())["mIoU"]
    single = run_cli(
        "eval",
        f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mIoU"] == pytest.approx(
        validated, abs=1e-6
    )

    stopped = tmp_path / "stopped"
    long_run = [*two_nodes, "trainer.max_epochs=300", f"hydra.run.dir={stopped}"]
    nodes = start_nodes(*long_run, cwd=tmp_path)
    last = stopped / "checkpoints" / "last.ckpt"
    wait_for(last, nodes[0])
    nodes[1].send_signal(signal.SIGTERM)
    assert finish(nodes, timeout=120) == [143, 143], [node.output[-2000:] for node in nodes]
    epoch = torch.load(last, weights_only=True)["epoch"]

    resumed = [*two_nodes, f"trainer.max_epochs={epoch + 3}", f"hydra.run.dir={stopped}", "resume=true"]
    nodes = start_nodes(*resumed, cwd=tmp_path)
    assert finish(nodes) == [0, 0], [node.output[-2000:] for node in nodes]
    assert f"resume=true: resuming from {last}" in nodes[0].output
    assert torch.load(last, weights_only=True)["epoch"] == epoch + 2
