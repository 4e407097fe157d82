"""SLURM jobs through hydra/launcher=slurm on a real single-node cluster (scripts/slurm/start_cluster.sh):
a 2-task DDP job, a 3-job array, and a job requeued mid-training that resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_cli
from omegaconf import OmegaConf
from test_scale_out import SMALL, start_cli, wait_for

#: A real cluster and real jobs: minutes, so outside ``make test-fast``.
pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "slurm"
#: Small jobs: one CPU and 2 GB per task, so the test jobs share the node.
SLURM = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=15",
    "hydra.sweep.dir=sweep",
]


# The tests of this file run in one pytest-xdist worker (make test uses --dist loadfile).
@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("SEGTRAIN_SLURM_TESTS") != "1":
        pytest.skip(
            "the SLURM tests install and start a cluster on this machine (apt-get, /etc/slurm, daemons); "
            "set SEGTRAIN_SLURM_TESTS=1 to run them, as .ci/run does"
        )
    if os.geteuid() != 0 or not (shutil.which("apt-get") or shutil.which("slurmctld")):
        pytest.skip("starting a SLURM cluster needs root on Debian (apt-get, /etc/slurm)")
    started = subprocess.run(
        ["bash", str(SCRIPTS / "start_cluster.sh")], capture_output=True, text=True, timeout=900
    )
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh")], capture_output=True, timeout=300)


def job_state(job_id: str, final: str = "COMPLETED") -> str:
    """The job's state in SLURM's accounting, which records the end of a job a few seconds late."""
    for _ in range(150):
        state = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True
        ).stdout.strip()
        if state == final:
            break
        time.sleep(0.2)
    return state


def test_two_task_ddp_job_sees_both_ranks(cluster, tmp_path):
    result = run_cli(*SLURM, "trainer=ddp_cpu", "trainer.devices=2", *SMALL, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"sweep/0/ranks/rank{r}.json").read_text()) for r in (0, 1)]
    assert [rank["global_rank"] for rank in ranks] == [0, 1]
    assert ranks[0]["slurm_job_id"] == ranks[1]["slurm_job_id"] is not None
    assert ranks[0]["config_sha256"] == ranks[1]["config_sha256"]
    assert not (tmp_path / "sweep/0/ranks/job.yaml").exists()  # srun started the ranks, not segtrain
    assert job_state(ranks[0]["slurm_job_id"]) == "COMPLETED"
    submission = next((tmp_path / "sweep/.submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in submission and "#SBATCH --signal=USR1@120" in submission
    assert (tmp_path / "sweep/0/val_metrics.json").is_file()


def test_sweep_of_three_runs_as_an_array(cluster, tmp_path):
    result = run_cli(*SLURM, *SMALL, "optimizer.lr=0.001,0.002,0.003", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_ids = {path.parent.name for path in (tmp_path / "sweep/.submitit").rglob("*_result.pkl")}
    assert len(job_ids) == 3 and len({job_id.split("_")[0] for job_id in job_ids}) == 1  # ARRAYID_TASKID
    for job_id in job_ids:
        assert job_state(job_id) == "COMPLETED"
    lrs = sorted(OmegaConf.load(tmp_path / f"sweep/{job}/.hydra/config.yaml").optimizer.lr for job in "012")
    assert lrs == [0.001, 0.002, 0.003]
    assert "3 trials (3 complete, 0 pruned, 0 failed)" in result.stdout


def test_requeued_job_resumes_from_its_checkpoint(cluster, tmp_path):
    args = [arg for arg in SMALL if not arg.startswith("data.dataset.lengths")]
    args += ["data.dataset.lengths={train:256,val:8,test:8}", "trainer.max_epochs=5"]
    process = start_cli(*SLURM, *args, cwd=tmp_path)
    run = tmp_path / "sweep" / "0"
    wait_for(run / "checkpoints" / "last.ckpt", process)
    (job_id,) = {path.name for path in (tmp_path / "sweep/.submitit").glob("*/*") if path.is_dir()}
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    # A requeued job waits ~2 min before it may start again; let it start now.
    for _ in range(50):
        if subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"]).returncode == 0:
            break
        time.sleep(0.2)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert json.loads((run / "val_metrics.json").read_text())["epochs"] == 5
    log = (run / "cli.log").read_text()
    assert f"this run was requeued: resuming from {run / 'checkpoints' / 'last.ckpt'}" in log
    epochs = {
        int(line.split(",")[0])
        for line in (run / "metrics.csv").read_text().splitlines()[1:]
        if line.split(",")[0]
    }
    assert epochs == {0, 1, 2, 3, 4}  # the rows from before the requeue were kept
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown
