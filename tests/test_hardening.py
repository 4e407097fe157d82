"""What new, careless and hostile users hit: nothing silent, nothing lost, no code from a checkpoint.

Each test drives the ``segtrain`` command as a user does and checks both the message and that
nothing on disk changed that should not have.
"""

import hashlib
import json
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import OFFLINE_ENV, TINY, checkpoints, make_voc_tree, run_cli
from tests.layouts import make_folder_tree, save
from tests.test_cli import assert_clean_error


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


# --- a checkpoint is data, not code ------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: what a hostile pickle would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_checkpoint(source: Path, target: Path, key: str, node: dict) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    parent, _, leaf = key.rpartition(".")
    config = checkpoint["segtrain"]["config"]
    for part in parent.split(".") if parent else []:
        config = config[part]
    config[leaf] = node
    torch.save(checkpoint, target)
    return target


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_crafted_checkpoints_are_refused_without_side_effects(trained_run, tmp_path, command):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    other = tmp_path / "other.txt"
    other.write_text("overwritten")
    marker = tmp_path / "pickle_ran"
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps(_Payload(marker)))
    attacks = {
        "open": ("model", {"_target_": "builtins.open", "file": str(victim), "mode": "w"}),
        "copyfile": ("loss", {"_target_": "shutil.copyfile", "src": str(other), "dst": str(victim)}),
        "torch_load": ("data.dataset", {"_target_": "torch.load", "f": str(payload), "weights_only": False}),
    }
    images = tmp_path / "images"
    save(np.zeros((32, 32, 3), np.uint8), images / "a.png")
    extra = {
        "eval": [],
        "predict": [f"input={images}", f"output={tmp_path / 'pred'}"],
        "export": [f"output={tmp_path / 'model.onnx'}"],
    }[command]
    for name, (key, node) in attacks.items():
        ckpt = crafted_checkpoint(trained_run["best"], tmp_path / f"{name}.ckpt", key, node)
        result = run_cli(command, f"ckpt={ckpt}", *extra, cwd=tmp_path)
        target = node["_target_"]
        assert_clean_error(result, f"names {key}._target_={target}", "not a model, loss, optimizer")
    assert victim.read_text() == "precious" and not marker.exists()
    assert not (tmp_path / "pred").exists() and not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_resume_of_a_checkpoint_naming_a_foreign_target_is_refused(trained_run, tmp_path):
    crafted = crafted_checkpoint(
        trained_run["last"], tmp_path / "crafted.ckpt", "model", {"_target_": "os.system", "command": "true"}
    )
    result = run_cli(*TINY, "trainer.max_epochs=3", f"resume={crafted}", cwd=tmp_path)
    assert_clean_error(result, f"resume={crafted} names model._target_=os.system", "not a model")
    assert not checkpoints(tmp_path / "outputs")


def test_resume_from_a_pickle_payload_runs_nothing(tmp_path):
    marker = tmp_path / "pickle_ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, hostile)
    result = run_cli(*TINY, f"resume={hostile}", cwd=tmp_path)
    assert_clean_error(
        result, f"resume={hostile} holds objects other than tensors", "not written by segtrain"
    )
    assert not marker.exists()


def test_unreadable_checkpoints_are_named_in_the_users_terms(tmp_path):
    """Random bytes are 'not a checkpoint' and a cut copy 'truncated', not torch's unpickling errors."""
    from segtrain.errors import SegtrainError
    from segtrain.runtime.checkpoint import read_metadata, torch_load

    noise, cut = tmp_path / "noise.ckpt", tmp_path / "cut.ckpt"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    torch.save({"state_dict": {"w": torch.zeros(50_000)}}, cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    for path, reason in ((noise, "is not a checkpoint"), (cut, "is truncated or damaged")):
        expected = re.escape(f"ckpt={path} {reason}")
        with pytest.raises(SegtrainError, match=expected):
            read_metadata(path)  # eval's and predict's read, memory-mapped
        with pytest.raises(SegtrainError, match=expected):
            torch_load(path, "ckpt")


@pytest.mark.slow
def test_a_users_own_target_is_allowed_when_typed_on_the_command_line(trained_run, tmp_path):
    """A checkpoint of a model outside conf/ is rebuilt once its user names the target."""
    own = crafted_checkpoint(
        trained_run["best"], tmp_path / "own.ckpt", "model._target_", "tests.own_models.OwnUNet"
    )
    with_tests = {"PYTHONPATH": str(Path(__file__).parents[1])}  # where tests.own_models imports from
    refused = run_cli("eval", f"ckpt={own}", "trainer.limit_test_batches=1", cwd=tmp_path, env=with_tests)
    assert_clean_error(refused, "model._target_=tests.own_models.OwnUNet", "name the target yourself")
    typed = run_cli(
        "eval", f"ckpt={own}", "model._target_=tests.own_models.OwnUNet", cwd=tmp_path, env=with_tests
    )
    assert typed.returncode == 0, typed.stderr[-2000:]


# --- eval, predict and export follow the command's overrides ---------------------------------------------


@pytest.mark.slow
def test_eval_on_another_tree_scores_that_tree(tmp_path):
    tree_a = make_folder_tree(tmp_path / "a", count=10, size=(32, 32))
    tree_b = make_folder_tree(tmp_path / "b", count=7, size=(40, 48), seed=1)
    common = [
        "data=folder",
        "data.label_map={255:1}",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
        "data.batch_size=4",
        "model=unet_small",
        "model.base_channels=4",
        "model.depth=2",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
        "trainer.num_sanity_val_steps=0",
    ]
    trained = run_cli(*common, f"data.root={tree_a}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (best,) = checkpoints(tmp_path / "outputs", "best.ckpt")
    stored = torch.load(best, weights_only=True)["segtrain"]
    assert stored["config"]["data"]["dataset"]["root"] == "${data.root}"
    assert stored["resolved_config"]["data"]["dataset"]["root"] == str(tree_a)

    result = run_cli(
        "eval",
        f"ckpt={best}",
        f"data.root={tree_b}",
        "data.crop_size=[24,24]",
        "inference.mode=slide",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "eval").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    # The hold-out split 'val' is every 5th image: 2 of B's 7, where A's 10 gave 2 of another size.
    assert metrics["root"] == str(tree_b) and metrics["split"] == "val" and metrics["images"] == 2
    assert metrics["pixels"] == 2 * 40 * 48  # B's two val masks, every pixel labelled
    assert metrics["inference"]["crop_size"] == [24, 24], "inference.crop_size follows data.crop_size"
    assert f"root={tree_b} split=val: 2 images" in result.stdout


# --- nothing the user wrote is overwritten -----------------------------------------------------------


@pytest.mark.slow
def test_predict_refuses_outputs_that_would_overwrite_the_users_files(trained_run, tmp_path):
    cwd, ckpt = trained_run["cwd"], trained_run["best"]
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a.png", "a.jpg", "b.png"):
        save(rng.integers(0, 255, (33, 41, 3), dtype=np.uint8), photos / name)
    before = tree_digest(photos)
    assert_clean_error(
        run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"output={photos}", cwd=cwd), "inside input"
    )
    assert_clean_error(
        run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"output={photos}/masks", cwd=cwd),
        "inside input",
    )
    assert_clean_error(
        run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"output={photos / 'b.png'}", cwd=cwd),
        "is an existing file",
    )
    assert tree_digest(photos) == before

    mine = tmp_path / "mine"
    save(np.zeros((4, 4), np.uint8), mine / "b.png")
    mine_before = tree_digest(mine)
    assert_clean_error(
        run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"output={mine}", cwd=cwd),
        "did not write",
        "b.png",
    )
    assert tree_digest(mine) == mine_before

    out = tmp_path / "pred"
    for _ in range(2):  # a rerun may replace what segtrain wrote there itself
        result = run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"output={out}", cwd=cwd)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 3 masks" in result.stdout
    assert sorted(p.name for p in out.glob("*.png")) == ["a_jpg.png", "a_png.png", "b.png"]


@pytest.mark.slow
def test_export_keeps_one_metadata_file_per_model_and_checks_it(trained_run, tmp_path):
    cwd, ckpt = trained_run["cwd"], trained_run["best"]
    sizes = "export.check_sizes=[[32,32],[45,61]]"
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        result = run_cli(
            "export", f"ckpt={ckpt}", f"format={fmt}", f"output={tmp_path / name}", sizes, cwd=cwd
        )
        assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "model.onnx.json").read_text())["format"] == "onnx"
    assert json.loads((tmp_path / "model.pt.json").read_text())["format"] == "torchscript"

    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    (tmp_path / "model.onnx.json").write_text(json.dumps({**meta, "classes": meta["classes"][:3]}))
    save(np.zeros((32, 32, 3), np.uint8), tmp_path / "in" / "x.png")

    def predict(model: str, out: str):
        return run_cli(
            "predict",
            f"ckpt={tmp_path / model}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / out}",
            cwd=cwd,
        )

    assert_clean_error(predict("model.onnx", "out"), "outputs 6 classes", "lists 3")
    # Without the side file, the copy inside the ONNX file serves (the torchscript file has none).
    (tmp_path / "model.onnx.json").unlink()
    result = predict("model.onnx", "o2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "o2" / "x.png").is_file()
    (tmp_path / "model.onnx.json").write_text(json.dumps(meta))
    (tmp_path / "model.pt.json").unlink()
    result = predict("model.pt", "o3")
    assert_clean_error(result, "model.pt.json is missing")
    result = run_cli(
        "export", f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'model.pt'}", cwd=cwd
    )
    assert_clean_error(result, "exists and was not written by segtrain export")

    earlier = digest(tmp_path / "model.onnx")
    result = run_cli(
        "export", f"ckpt={ckpt}", f"output={tmp_path / 'model.onnx'}", sizes, "export.atol=0", cwd=cwd
    )
    assert_clean_error(result, "> export.atol=0", f"nothing was written to {tmp_path / 'model.onnx'}")
    assert digest(tmp_path / "model.onnx") == earlier and not list(tmp_path.glob(".model.onnx.*"))

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for output, fragment in (
        (tmp_path, "is a directory"),
        (blocker / "model.onnx", "not a directory"),
        ("/proc/segtrain/model.onnx", "is not writable"),
    ):
        assert_clean_error(run_cli("export", f"ckpt={ckpt}", f"output={output}", cwd=cwd), fragment)


# --- lost work and wrong resumes ------------------------------------------------------------------------


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_when_the_metric_does_not_improve(tmp_path):
    # lr 1e-30 and no BatchNorm: the predictions, and so val/mIoU, never change.
    result = run_cli(
        *TINY, "trainer.max_epochs=3", "optimizer.lr=1e-30", "model.batch_norm=false", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (last,) = checkpoints(tmp_path / "outputs")
    assert torch.load(last, weights_only=True)["global_step"] == 12  # 3 epochs x 4 steps
    assert torch.load(last.with_name("best.ckpt"), weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_eval_refuses_a_run_directory_of_the_users_files(trained_run, tmp_path):
    folder = tmp_path / "mine"
    (folder / "predictions").mkdir(parents=True)
    for name in ("img00.png", "img05.png"):
        save(np.full((8, 8), 7, np.uint8), folder / "predictions" / name)
    before = tree_digest(folder)
    result = run_cli(
        "eval",
        f"ckpt={trained_run['best']}",
        "save_predictions=true",
        f"hydra.run.dir={folder}",
        cwd=tmp_path,
    )
    assert_clean_error(result, f"hydra.run.dir={folder} already holds files segtrain did not write", "img0")
    assert tree_digest(folder) == before


@pytest.mark.slow
def test_two_runs_given_one_directory_at_the_same_moment_one_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    command = [sys.executable, "-m", "segtrain", *TINY, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, **OFFLINE_ENV}
    procs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(proc.wait(timeout=300), proc.communicate()[1]) for proc in procs]
    assert sorted(code for code, _ in results) == [0, 2], [err[-1500:] for _, err in results]
    refused = next(err for code, err in results if code == 2)
    assert "claimed by another segtrain train" in refused or "already holds a run" in refused, refused
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len([row for row in rows if row.startswith("epoch")]) == 1  # one run's header, one run's rows


@pytest.mark.slow
def test_debug_runs_and_reruns_never_take_over_resume(tmp_path):
    real = run_cli(*TINY, cwd=tmp_path)
    assert real.returncode == 0, real.stderr[-2000:]
    (real_last,) = checkpoints(tmp_path / "outputs")
    smoke = run_cli(*TINY, "debug=fast_dev_run", cwd=tmp_path)
    assert smoke.returncode == 0 and checkpoints(tmp_path / "outputs") == [real_last]
    limit = run_cli(*TINY, "debug=limit", "trainer.max_epochs=1", "trainer.limit_val_batches=0", cwd=tmp_path)
    assert limit.returncode == 0 and len(checkpoints(tmp_path / "outputs")) == 2
    assert "so no best checkpoint was chosen; last checkpoint: " in limit.stdout + limit.stderr
    resumed = run_cli(*TINY, "trainer.max_epochs=2", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {real_last}" in resumed.stdout + resumed.stderr

    run_dir = real_last.parents[1]
    config_before = digest(run_dir / ".hydra" / "config.yaml")
    rerun = run_cli(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_clean_error(rerun, f"{run_dir} already holds a run", "resume=true")
    assert digest(run_dir / ".hydra" / "config.yaml") == config_before
    assert torch.load(real_last, weights_only=True)["global_step"] == 4
    continued = run_cli(
        *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", "resume=true", cwd=tmp_path
    )
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert torch.load(real_last, weights_only=True)["global_step"] == 8


@pytest.mark.slow
def test_a_sweep_into_a_directory_holding_a_sweep_is_refused(tmp_path):
    sweep = [
        "-m",
        *TINY,
        "debug=fast_dev_run",
        "optimizer.lr=0.01,0.02",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_digest(tmp_path / "sweep")
    assert_clean_error(
        run_cli(*sweep, cwd=tmp_path), f"{tmp_path / 'sweep'} already holds a run", "hydra.sweep.dir"
    )
    assert tree_digest(tmp_path / "sweep") == before


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories_and_run_name_stays_inside(tmp_path):
    command = [sys.executable, "-m", "segtrain", *TINY, "debug=fast_dev_run"]
    env = {**os.environ, **OFFLINE_ENV}
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0, 0]
    assert len(list((tmp_path / "outputs" / "shapes-unet_small").iterdir())) == 2
    escaped = run_cli(*TINY, "run_name=../../escaped", cwd=tmp_path / "outputs")
    assert_clean_error(escaped, "run_name='../../escaped' is invalid")
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_exits_128_plus_it_and_keeps_the_checkpoints(tmp_path, stop, code):
    command = [sys.executable, "-m", "segtrain", *TINY, "trainer.max_epochs=200"]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, **OFFLINE_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The event is the first checkpoint on disk; the loop only guards against a run that never writes one.
    while not checkpoints(tmp_path / "outputs"):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert f"stopped by {signal.Signals(stop).name}" in stderr
    (last,) = checkpoints(tmp_path / "outputs")
    assert torch.load(last, weights_only=True)["global_step"] >= 4


def file_size_limit(limit: int):
    """A ``preexec_fn`` under which no file may grow past ``limit`` bytes: the write fails with EFBIG as it
    would with ENOSPC on a full disk (SIGXFSZ ignored so that the write fails rather than the process)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.slow
def test_a_full_disk_during_export_is_one_error_and_the_earlier_export_stays(trained_run, tmp_path):
    onnx = tmp_path / "m.onnx"
    assert run_cli("export", f"ckpt={trained_run['best']}", f"output={onnx}", cwd=tmp_path).returncode == 0
    before = digest(onnx)
    # What a SIGKILL mid-export leaves behind: a temporary of a process that no longer runs.
    stale = tmp_path / ".m.onnx.999999999.tmp"
    stale.write_bytes(b"partial")
    limited = file_size_limit(30_000)
    result = run_cli(
        "export", f"ckpt={trained_run['best']}", f"output={onnx}", cwd=tmp_path, preexec_fn=limited
    )
    assert_clean_error(result, f"cannot write the export {onnx}", "the earlier m.onnx is intact", "output")
    assert "does not fit this model" not in result.stdout + result.stderr  # the disk is not the model's fault
    assert digest(onnx) == before
    assert not list(tmp_path.glob(".m.onnx.*.tmp"))


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_is_one_error_and_the_last_good_one_stays(
    trained_run, tmp_path
):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run["last"].parents[1], run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    before = digest(last)
    limited = file_size_limit(100_000)
    result = run_cli(*TINY, "trainer.max_epochs=4", f"resume={last}", cwd=tmp_path, preexec_fn=limited)
    assert_clean_error(result, "cannot write the checkpoint", "File too large", "paths.log_dir")
    assert digest(last) == before
    assert not list(tmp_path.rglob("*.tmp"))


# --- silent wrong numbers ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.ignore_index=3"], ["data.ignore_index=3 is the id of class 'triangle'"]),
        (["optimizer.lr=inf"], ["optimizer.lr=inf is invalid", "finite"]),
        (["loss.class_weights=[1,-1,1,1,1,1]"], ["loss.class_weights", ">= 0"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs=0 is invalid"]),
        (["data.val_batch_size=-1"], ["data.val_batch_size=-1 is invalid"]),
        (["trainer.devices=0"], ["trainer.devices=0 is invalid"]),
        (
            ["inference.mode=slide", "inference.crop_size=[1,1]"],
            ["inference.crop_size=[1, 1] is invalid", ">= 8"],
        ),
        (
            ["inference.mode=slide", "inference.crop_size=[32,32]", "inference.stride=[0,0]"],
            ["inference.stride=[0, 0] is invalid"],
        ),
        (["inference.scales=[0.001]"], ["inference.scales=[0.001] is invalid"]),
        (["data.crop_size=[0,0]"], ["data.crop_size=[0, 0] is invalid"]),
        pytest.param(
            ["trainer=gpu"],
            ["no CUDA GPU is visible", "trainer=cpu"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="trainer=gpu is valid where a GPU is"),
        ),
        (["paths.log_dir=/proc/segtrain"], ["is not writable", "paths.log_dir"]),
        (["loss=dice", "+loss.class_weights=[1,1,1,1,1,1]"], ["takes no argument 'class_weights'"]),
        (
            [
                "model=deeplabv3",
                "model.backbone.name=resnet18",
                "model.backbone.pretrained=false",
                "model.backbone.multi_grid=[1,2,4,8]",
            ],
            ["model.backbone.multi_grid=[1, 2, 4, 8] needs a ResNet"],
        ),
    ],
)
def test_bad_values_get_one_error_line(tmp_path, overrides, fragments):
    tiny = (
        [o for o in TINY if not o.startswith("model.")]
        if any(o.startswith("model=") for o in overrides)
        else TINY
    )
    result = run_cli(*tiny, *overrides, cwd=tmp_path)
    assert_clean_error(result, *fragments)
    assert result.returncode == 2


@pytest.mark.slow
def test_unknown_splits_are_refused(trained_run, tmp_path):
    result = run_cli("eval", f"ckpt={trained_run['best']}", "data.split=tset", cwd=tmp_path)
    assert_clean_error(result, "data=shapes has no split 'tset'", "train, val, test")
    voc = make_voc_tree(tmp_path)
    result = run_cli("check-data", "data=voc", f"data.root={voc}", "data.split=tset", cwd=tmp_path)
    assert_clean_error(result, "ImageSets/Segmentation/tset.txt does not exist")


def test_a_typo_in_the_command_word_is_named(tmp_path):
    assert_clean_error(run_cli("evall", cwd=tmp_path), "unknown command 'evall'", "segtrain eval")


@pytest.mark.slow
def test_trainer_keys_work_without_plus_and_several_cpu_devices_run_through_segtrains_launcher(tmp_path):
    result = run_cli(
        *TINY,
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.max_time=null",
        "trainer.val_check_interval=1.0",
        "trainer.benchmark=false",
        "trainer.devices=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "shapes-unet_small").iterdir()
    ranks = [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank*.json"))]
    assert [rank["world_size"] for rank in ranks] == [3, 3, 3]
    assert len({rank["config_sha256"] for rank in ranks}) == 1
    # 32 images over 3 ranks leave each rank 10 or 11, one full batch of 8: one step, under the limit of 2.
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


@pytest.mark.slow
def test_eval_with_another_model_states_the_mismatch(trained_run, tmp_path):
    result = run_cli("eval", f"ckpt={trained_run['best']}", "model.base_channels=8", cwd=tmp_path)
    assert_clean_error(result, "do not fit model=segtrain.models.unet.UNet", "Drop the model overrides")
    result = run_cli("eval", f"ckpt={trained_run['best']}", "model.num_classes=3", cwd=tmp_path)
    assert_clean_error(result, "model.num_classes=3 does not match the 6 classes")


def test_corrupt_resume_file_is_named(tmp_path, trained_run):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(trained_run["last"].read_bytes()[:5000])
    assert_clean_error(
        run_cli(*TINY, f"resume={corrupt}", cwd=tmp_path), f"resume={corrupt} is truncated or damaged"
    )


# --- files dropped, check-data guidance ---------------------------------------------------------------


@pytest.mark.slow
def test_training_says_what_it_drops_and_stops_on_listed_files_that_do_not_exist(tmp_path):
    root = make_folder_tree(tmp_path / "data", count=10)
    (root / "masks" / "img_004.png").unlink()
    common = [
        "data=folder",
        f"data.root={root}",
        "data.label_map={255:1}",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
        "data.batch_size=4",
        *TINY[4:],
    ]
    result = run_cli(*common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 files have no image or mask to pair with and are left out" in result.stderr
    assert "img_004.png" in result.stderr

    voc = make_voc_tree(tmp_path / "voc")
    listed = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    (voc / "JPEGImages" / f"{listed[1]}.jpg").unlink()
    result = run_cli(
        "data=voc",
        f"data.root={voc}",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
        *TINY[4:],
        cwd=tmp_path,
    )
    assert_clean_error(result, "names 1 files that do not exist", f"{listed[1]}.jpg")


@pytest.mark.slow
def test_one_pixel_image_is_named(tmp_path):
    root = make_folder_tree(tmp_path / "data", count=6)
    save(np.zeros((1, 1, 3), np.uint8), root / "images" / "img_002.png")
    save(np.zeros((1, 1), np.uint8), root / "masks" / "img_002.png")
    result = run_cli(
        "data=folder",
        f"data.root={root}",
        "data.label_map={255:1}",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.split=all",
        "data.train_split=all",
        *TINY[4:],
        cwd=tmp_path,
    )
    assert_clean_error(result, "img_002.png is 1 x 1 (H x W) pixels")


def test_the_stored_config_keeps_links_between_keys_and_resolves_the_environment(tmp_path):
    from omegaconf import open_dict

    from segtrain.config import compose
    from segtrain.runtime.checkpoint import composed_config

    cfg = compose(
        "config",
        ["data=voc", f"data.root={tmp_path}", f"paths.output_dir={tmp_path}", "run_name=r"],
        with_hydra=True,
    )
    with open_dict(cfg):
        cfg.pop("hydra")  # as a run's task sees it
    stored = composed_config(cfg)
    assert (
        stored["data"]["dataset"]["root"] == "${data.root}"
        and stored["model"]["num_classes"] == "${data.num_classes}"
    )
    assert stored["inference"]["crop_size"] == "${data.crop_size}"
    assert stored["data"]["num_workers"] == "${loader_workers:${trainer.devices}}"  # the eval machine's cores
    assert stored["paths"]["log_dir"] == "outputs" and "${" not in json.dumps(stored["paths"])


@pytest.mark.slow
def test_eval_of_a_pretrained_backbone_fetches_nothing_and_says_the_weights_are_the_checkpoints(tmp_path):
    """A checkpoint trained from ImageNet weights evaluates offline, with no hub cache: its own weights
    replace them, and no line says 'random initialisation'."""
    model = ["model=fpn", "model.backbone.name=resnet18", "model.backbone.pretrained=false"]
    model += ["model.fpn_channels=32", "model.head_channels=32"]
    tiny = [o for o in TINY if not o.startswith("model.")]
    assert run_cli(*tiny, *model, cwd=tmp_path).returncode == 0
    (last,) = checkpoints(tmp_path / "outputs")
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["segtrain"]["config"]["model"]["backbone"]["pretrained"] = True
    crafted = tmp_path / "imagenet.ckpt"
    torch.save(checkpoint, crafted)
    env = {"TORCH_HOME": str(tmp_path / "empty_hub")}  # no cached ImageNet weights, no network
    result = run_cli("eval", f"ckpt={crafted}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert f"model weights from ckpt={crafted}" in output and "random initialisation" not in output
    assert not (tmp_path / "empty_hub").exists()
