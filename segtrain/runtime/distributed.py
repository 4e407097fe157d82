"""Multi-process DDP in which every rank runs the job's own config.

Lightning's ``ddp`` launcher starts ranks 1..N-1 by re-running the command line. Under Hydra
multirun that command line is the whole sweep, and under pytest it is pytest, so the extra ranks
silently train another job (lightning-hydra-template #393, #226, #194). Here rank 0 writes the job,
its resolved config and the function to run on it, to ``ranks/job.yaml`` and starts the other
ranks as ``python -m segtrain.runtime.distributed ranks/job.yaml``. Where a cluster starts the ranks itself
(SLURM's srun, torchrun) nothing is launched: Lightning reads the rank from the environment.

After the job the process group is destroyed and the environment variables the launcher set are
restored, so the next job of a sweep starts its own ranks instead of joining the old ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from segtrain.compat import SubprocessScriptLauncher, stop_on_every_rank
from segtrain.errors import SegtrainError
from segtrain.reporting import report_errors

#: ``trainer.strategy`` names whose ranks Lightning would start by re-running the command line.
SUBPROCESS_STRATEGIES = {"ddp": {}, "ddp_find_unused_parameters_true": {"find_unused_parameters": True}}
_RANK_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


class ConfigLauncher(SubprocessScriptLauncher):
    """Lightning's subprocess launcher, starting ranks on the job file instead of ``sys.argv``."""

    def __init__(
        self, cluster_environment, num_processes: int, num_nodes: int, function: str, config: DictConfig
    ):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.function = function
        self.config = config
        self.saved_environment: dict[str, str | None] | None = None

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        job_file = Path(self.config.paths.output_dir) / "ranks" / "job.yaml"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(
            {"function": self.function, "config": OmegaConf.to_container(self.config, resolve=True)}, job_file
        )
        self.saved_environment = {key: os.environ.get(key) for key in _RANK_ENVIRONMENT}
        environment = self.cluster_environment
        os.environ.update(
            MASTER_ADDR=environment.main_address,
            MASTER_PORT=str(environment.main_port),
            NODE_RANK=str(environment.node_rank()),
            LOCAL_RANK=str(environment.local_rank()),
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        command = [sys.executable, "-m", "segtrain.runtime.distributed", str(job_file)]
        for local_rank in range(1, self.num_processes):
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)}))

    def finish(self) -> None:
        """Wait for the ranks this launcher started and restore the environment they were started with."""
        failed = [proc.pid for proc in self.procs if proc.wait() != 0]
        if self.saved_environment is not None:
            for key, value in self.saved_environment.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self.saved_environment = None
        if failed:
            raise SegtrainError(f"DDP ranks with pids {failed} failed; their errors are printed above")


class DDPStrategy(pl.strategies.DDPStrategy):
    """Lightning's DDP with the :class:`ConfigLauncher`; ``function`` is what each extra rank runs on
    ``config``."""

    def __init__(self, function: str, config: DictConfig, **kwargs):
        super().__init__(**kwargs)
        self.rank_function = function
        self.rank_config = config

    def _configure_launcher(self) -> None:
        self._launcher = ConfigLauncher(
            self.cluster_environment, self.num_processes, self.num_nodes, self.rank_function, self.rank_config
        )

    def teardown(self) -> None:
        super().teardown()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if isinstance(self._launcher, ConfigLauncher):
            self._launcher.finish()


def strategy_for(cfg: DictConfig, function: str | None) -> DDPStrategy | None:
    """The strategy replacing ``trainer.strategy=ddp``; None for single-process and other strategies.
    ``function`` is None for commands that run in one process, which then refuse a DDP strategy."""
    name = OmegaConf.select(cfg, "trainer.strategy")
    if name == "auto" and process_count(cfg) > 1:
        name = "ddp"  # what Lightning picks for several devices, started by re-running sys.argv
    if name not in SUBPROCESS_STRATEGIES:
        return None
    if function is None:
        raise SegtrainError(
            f"trainer.strategy={name} is for training; this command runs in one process: "
            "use trainer=cpu or trainer=gpu"
        )
    return DDPStrategy(function, cfg, **SUBPROCESS_STRATEGIES[name])


def process_count(cfg: DictConfig) -> int:
    """The processes ``cfg.trainer`` asks for: devices per node x nodes."""
    devices = OmegaConf.select(cfg, "trainer.devices")
    if isinstance(devices, str) and devices != "auto":
        devices = [index for index in devices.split(",") if index.strip()]
    if devices in (-1, "auto"):
        gpu = OmegaConf.select(cfg, "trainer.accelerator") in ("gpu", "cuda", "auto")
        devices = torch.cuda.device_count() if gpu and torch.cuda.is_available() else 1
    per_node = len(devices) if isinstance(devices, (list, ListConfig)) else int(devices or 1)
    return per_node * int(OmegaConf.select(cfg, "trainer.num_nodes") or 1)


class StopTogether(pl.Callback):
    """A SIGTERM that reaches any one rank (one node's scheduler, ``kill`` on one host) stops every rank at
    the same step, so that the others do not wait forever in a collective the stopped rank never joins.

    Lightning's own SIGTERM handler broadcasts from inside the handler, a collective no other rank is in
    (the job hangs), and its per-step broadcast carries rank 0's flag only. Here the handler just notes
    the signal; after each training batch the ranks agree (one all-reduce of one number) and all set
    Lightning's flag together, which its next step turns into SIGTERMException on every rank."""

    def __init__(self):
        self.signalled = False
        self.trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            self.trainer = trainer
            signal.signal(signal.SIGTERM, self.note)

    def note(self, signum, frame) -> None:
        if not self.signalled and self.trainer is not None and self.trainer.strategy.launcher is not None:
            self.trainer.strategy.launcher.kill(signum)  # the ranks this process started, on this node
        self.signalled = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.world_size == 1:
            return
        flag = torch.tensor([float(self.signalled)], device=pl_module.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            stop_on_every_rank(trainer)


class RankRecord(pl.Callback):
    """Writes ``ranks/rank<N>.json`` in multi-process runs: which host and process ran each rank, and
    the SHA-256 of the resolved config it trained with (equal on every rank of a job)."""

    def __init__(self, directory: str | Path, config: dict):
        self.directory = Path(directory)
        self.config_sha256 = config_hash(config)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "config_sha256": self.config_sha256,
        }
        (self.directory / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry of ranks 1..N-1: run the job file's function on its config."""
    args = sys.argv[1:] if argv is None else argv
    from segtrain.noise import quiet

    quiet()
    job = OmegaConf.load(args[0])
    report_errors(get_method(job.function), job.config, prefix=f"error (rank {os.environ.get('LOCAL_RANK')})")


if __name__ == "__main__":
    main()
