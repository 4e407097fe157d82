"""What a user sees: progress off a terminal, the closing summary, pictures, per-command help, quiet logs."""

import re
import time

import pytest
from PIL import Image

from segtrain.cli import COMMANDS
from segtrain.help import COMMAND_HELP, INFERENCE
from segtrain.noise import LOG_LINES, WARNINGS
from tests.conftest import TINY, checkpoints, run_cli

NOISE = [pattern for pattern, _, _ in WARNINGS] + [pattern for pattern, _ in LOG_LINES] + [r"Total FLOPs"]


def assert_quiet(result, *more: str) -> None:
    for pattern in [*NOISE, *more]:
        assert not re.search(pattern, result.stdout + result.stderr), pattern


def decoded(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory) -> dict:
    """A short run whose stdout is a pipe, as under CI, nohup or SLURM."""
    cwd = tmp_path_factory.mktemp("piped")
    result = run_cli(
        "train",
        *TINY,
        "trainer.max_epochs=2",
        "callbacks.training_log.every_n_steps=2",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = checkpoints(cwd / "outputs", "best.ckpt")
    return {"cwd": cwd, "result": result, "run_dir": best.parent.parent, "best": best}


@pytest.mark.slow
def test_progress_lines_and_summary_off_a_terminal(piped_run):
    out = piped_run["result"].stdout
    epoch_lines = re.findall(
        r"^epoch (\d)/2  loss \d+\.\d{4}  lr \S+  [\d.]+ images/s  val mIoU (\d+\.\d\d) ", out, re.M
    )
    assert [epoch for epoch, _ in epoch_lines] == ["1", "2"]
    assert re.search(r"^epoch 1/2  step 2  loss \d+\.\d{4}", out, re.M)
    assert "ETA" in out
    # One way of counting epochs and of showing scores, in the lines, the table and the summary.
    assert "validation after epoch 2, inference whole" in out and "scored at" in out
    final = float(epoch_lines[-1][1])
    assert re.search(rf"^mIoU {final:.2f}  mDice", out, re.M)
    summary = out[out.index("training finished") :]
    assert re.search(
        r"training finished in \dm\d\ds: 2 epochs, best val mIoU \d+\.\d\d at epoch [12]", summary
    )
    for label in ("best checkpoint:", "last checkpoint:", "curves:", "val overlays:", "metrics:"):
        assert label in summary, label
    log = (piped_run["run_dir"] / "cli.log").read_text()
    assert re.search(r"\] epoch 2/2  loss", log) and "training finished" in log


@pytest.mark.slow
def test_curves_overlays_and_the_eval_chart_are_pictures(piped_run):
    run_dir = piped_run["run_dir"]
    width, height = decoded(run_dir / "curves.png")
    assert width > 600 and height > 200
    overlays = sorted((run_dir / "overlays").glob("epoch_*.png"))
    assert [path.name for path in overlays] == ["epoch_001.png", "epoch_002.png"]
    width, height = decoded(overlays[-1])
    assert (width, height) == (3 * 32, 4 * 32)  # image | truth | prediction, for 4 images of 32 px

    result = run_cli("eval", f"ckpt={piped_run['best']}", cwd=piped_run["cwd"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)
    (chart,) = (piped_run["cwd"] / "outputs" / "eval").rglob("per_class_iou.png")
    assert decoded(chart)[1] > 100
    assert "inference whole, flip off, scales [1.0], CRF off" in result.stdout


@pytest.mark.slow
def test_runs_print_none_of_the_filtered_noise(piped_run, tmp_path):
    assert_quiet(piped_run["result"])
    output = piped_run["result"].stdout + piped_run["result"].stderr
    assert "Total FLOPs" not in output
    # Lightning's lines go where segtrain's go: the console's stdout and the run's log file.
    assert "trainable parameters" in piped_run["result"].stdout
    (log_file,) = piped_run["run_dir"].glob("*.log")
    assert "trainable parameters" in log_file.read_text()
    resumed = run_cli("train", *TINY, "trainer.max_epochs=3", "resume=true", cwd=piped_run["cwd"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_quiet(resumed)
    limited = run_cli("train", *TINY, "debug=limit", cwd=tmp_path)
    assert limited.returncode == 0, limited.stderr[-3000:]
    assert_quiet(limited, "smaller than the logging interval")  # the shipped preset logs within its batches
    exported = run_cli(
        "export",
        f"ckpt={piped_run['best']}",
        "format=torchscript",
        f"output={tmp_path / 'model.pt'}",
        "export.check_sizes=[[32,32],[40,48]]",
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert_quiet(exported)


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"list"}))
def test_each_command_has_its_own_fast_help(command, tmp_path):
    started = time.perf_counter()
    result = run_cli(command, "--help", cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: segtrain {command}")
    listed = [key for key in COMMAND_HELP[command][1] if key != INFERENCE]
    if INFERENCE in COMMAND_HELP[command][1]:
        listed += ["inference.mode", "inference.score_threshold", "inference.mask_threshold"]
    for key in listed:
        assert f"  {key}  " in result.stdout, key
    examples = result.stdout.split("examples:\n")[1].split("\n\n")[0].splitlines()
    assert 2 <= len(examples) <= 3 and all(line.startswith("  segtrain ") for line in examples)
    assert seconds < 2, f"segtrain {command} --help took {seconds:.1f} s"
    assert "_target_" not in result.stdout  # not Hydra's dump of the training config


def test_hydra_help_stays_behind_a_flag(tmp_path):
    result = run_cli("eval", "--help-all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Configuration groups" in result.stdout and "save_predictions" in result.stdout
