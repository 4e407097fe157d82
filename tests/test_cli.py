"""End to end through the ``segtrain`` command, as a user runs it."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image

from segtrain.errors import SegtrainError
from tests.conftest import TINY, checkpoints, make_voc_tree, run_cli


def assert_clean_error(result, *fragments):
    """Non-zero exit, one ``error:`` line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_help_list_and_cfg(tmp_path):
    help_ = run_cli("--help", cwd=tmp_path)
    assert help_.returncode == 0 and "eval" in help_.stdout and "export" in help_.stdout
    listing = run_cli("list", cwd=tmp_path)
    assert listing.returncode == 0
    for expected in (
        "deeplabv3plus",
        "unet",
        "fcn",
        "voc",
        "shapes",
        "ce_dice",
        "focal",
        "sgd",
        "adamw",
        "poly",
        "cosine",
        "cpu",
        "gpu",
        "csv",
        "tensorboard",
        "wandb",
    ):
        assert expected in listing.stdout
    cfg = run_cli("train", "--cfg", "job", "model=deeplabv3plus", cwd=tmp_path)
    assert cfg.returncode == 0 and "DeepLabV3Plus" in cfg.stdout and "SegDataModule" in cfg.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("list",),
        ("train", "--cfg", "job"),
        ("eval", "ckpt=x", "--cfg", "job"),
        ("model=nope",),
        ("trainer.max_epochs=-3",),
        ("eval",),
        ("task=semantic", "model=mask_rcnn"),
        ("inference.mode=slide", "inference.crop_size=null"),
        ("data=camvid",),
    ],
)
def test_light_commands_and_config_errors_import_no_heavy_library(args, tmp_path):
    """Printing help, a config or a config error imports neither torch, Lightning, optuna nor torchvision
    (Hydra imports every installed plugin module whenever it composes, segtrain's sweeper among them; the
    unset data.root names the reader's layout, read from its source)."""
    result = run_cli(*args, cwd=tmp_path, timeout=120, interpreter_flags=("-X", "importtime"))
    assert result.returncode in (0, 2), result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "segtrain.cli" in imported
    assert not imported & {"torch", "pytorch_lightning", "lightning_fabric", "optuna", "torchvision"}


def test_task_monitor_is_the_score_train_reports_as_best(tmp_path):
    """task.monitor picks best.ckpt, and the summary and val_metrics.json name that score (they named the
    task's default score beside the monitored one's value)."""
    result = run_cli("train", *TINY, "task.monitor=val/mDice", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(next(tmp_path.rglob("val_metrics.json")).read_text())
    assert metrics["monitor"] == "val/mDice" and "best_val_mIoU" not in metrics
    assert metrics["best_val_mDice"] == pytest.approx(metrics["mDice"])
    assert metrics["mDice"] != pytest.approx(metrics["mIoU"])
    assert "best val mDice" in result.stdout + result.stderr


@pytest.mark.slow
def test_the_sanity_check_is_not_reported_as_a_validation(tmp_path):
    """Lightning's sanity check runs two validation batches before training; with no validation after it,
    train says so instead of reporting those batches' mIoU as the run's best."""
    result = run_cli(
        "train", *TINY, "trainer.check_val_every_n_epoch=2", "trainer.num_sanity_val_steps=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training finished without a validation" in result.stdout + result.stderr
    assert not list(tmp_path.rglob("val_metrics.json"))


def test_train_prints_table_and_writes_checkpoints_with_metadata(trained_run):
    out = trained_run["stdout"]
    for name in ("background", "disc", "ring", "IoU", "Dice", "mIoU", "mDice", "aAcc", "mAcc"):
        assert name in out
    assert trained_run["last"].is_file()
    checkpoint = torch.load(trained_run["best"], map_location="cpu", weights_only=True)
    meta = checkpoint["segtrain"]
    assert meta["classes"][0] == "background" and len(meta["palette"]) == 6
    assert meta["mean"] == pytest.approx([0.5] * 3) and meta["config"]["model"]["base_channels"] == 4
    run_dir = trained_run["best"].parent.parent
    logged = [
        float(row.split(",")[header.index("val/mIoU")])
        for header in [(run_dir / "metrics.csv").read_text().splitlines()[0].split(",")]
        for row in (run_dir / "metrics.csv").read_text().splitlines()[1:]
        if row.split(",")[header.index("val/mIoU")]
    ]
    val_metrics = json.loads((run_dir / "val_metrics.json").read_text())
    best = val_metrics["best_val_mIoU"]
    assert 0 < val_metrics["launch_to_first_step_s"] < 120
    assert len(logged) == 2 and best == pytest.approx(max(logged))
    assert torch.load(trained_run["best"], weights_only=True)["epoch"] == logged.index(max(logged))


@pytest.mark.slow
def test_eval_uses_stored_config_with_overrides(trained_run):
    cwd = trained_run["cwd"]
    result = run_cli(
        "eval",
        f"ckpt={trained_run['best']}",
        "data.split=test",
        "inference.mode=slide",
        "inference.crop_size=[16,16]",
        "inference.flip=true",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "split=test" in result.stdout and "mIoU" in result.stdout
    metrics = next(
        path for path in (cwd / "outputs" / "eval").rglob("metrics.json") if path.parent.name in result.stdout
    )
    data = json.loads(metrics.read_text())
    assert 0 <= data["mIoU"] <= 1 and "background" in data["per_class"]
    assert data["split"] == "test" and data["images"] == 8 and data["pixels"] == 8 * 32 * 32
    assert data["inference"]["mode"] == "slide" and data["inference"]["crop_size"] == [16, 16]
    assert data["inference"]["flip"] is True
    assert data["images_per_s"] > 0 and "images/s, loading included" in result.stdout
    assert "inference slide (windows [16, 16], stride half), flip on, scales [1.0], CRF off" in result.stdout
    assert Image.open(metrics.parent / "per_class_iou.png").size[0] > 100


def test_eval_with_other_classes_explains_the_mismatch(trained_run, tmp_path):
    voc = make_voc_tree(tmp_path)
    result = run_cli("eval", f"ckpt={trained_run['best']}", "data=voc", f"data.root={voc}", cwd=tmp_path)
    assert_clean_error(result, "trained on 6 classes", "declares 21 classes")


@pytest.mark.slow
def test_export_onnx_and_torchscript_then_predict_with_both(trained_run, tmp_path):
    cwd = trained_run["cwd"]
    onnx_path = tmp_path / "model.onnx"
    result = run_cli(
        "export",
        f"ckpt={trained_run['best']}",
        "format=onnx",
        f"output={onnx_path}",
        "export.check_sizes=[[32,32],[45,61]]",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "max abs diff" in result.stdout
        and "(1, 3, 32, 32)" in result.stdout
        and "(2, 3, 45, 61)" in result.stdout
    )
    graph_input = onnx.load(str(onnx_path)).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = json.loads(onnx_path.with_name("model.onnx.json").read_text())
    assert meta["classes"][1] == "disc" and meta["mean"] and meta["std"] and meta["palette"]
    assert meta["exporter"] == "torch.export"  # the current exporter, not the deprecated one
    embedded = {entry.key: json.loads(entry.value) for entry in onnx.load(str(onnx_path)).metadata_props}
    assert embedded["classes"] == meta["classes"] and embedded["mean"] == meta["mean"]

    ts = run_cli(
        "export",
        f"ckpt={trained_run['best']}",
        "format=torchscript",
        f"output={tmp_path / 'model.pt'}",
        "export.check_sizes=[[32,32],[45,61]]",
        cwd=cwd,
    )
    assert ts.returncode == 0, ts.stderr[-3000:]
    assert torch.jit.load(str(tmp_path / "model.pt"))(torch.zeros(1, 3, 33, 47)).shape == (1, 6, 33, 47)

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (40, 52)), ("b", (33, 33))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"{name}.png")
    masks = {}
    for source in (trained_run["best"], onnx_path, tmp_path / "model.pt"):
        out = tmp_path / f"pred_{source.suffix[1:]}"
        result = run_cli("predict", f"ckpt={source}", f"input={images}", f"output={out}", cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        mask = Image.open(out / "a.png")
        assert mask.mode == "P" and mask.size == (52, 40)
        assert mask.getpalette()[3:6] == [230, 25, 75]
        assert Image.open(out / "overlays" / "b.jpg").size == (33, 33)
        masks[source.suffix] = np.asarray(mask)
    assert (masks[".ckpt"] == masks[".onnx"]).mean() > 0.99
    assert (masks[".ckpt"] == masks[".pt"]).mean() > 0.99


@pytest.mark.slow
def test_voc_trains_with_deeplabv3plus(tmp_path):
    voc = make_voc_tree(tmp_path)
    result = run_cli(
        "model=deeplabv3plus",
        "data=voc",
        f"data.root={voc}",
        "model.backbone.name=resnet18",
        "model.backbone.multi_grid=null",
        "model.backbone.pretrained=false",
        "data.crop_size=[48,48]",
        "data.batch_size=2",
        "data.num_workers=0",
        "debug=limit",
        "callbacks.progress_bar=null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "aeroplane" in result.stdout and "tvmonitor" in result.stdout
    assert checkpoints(tmp_path / "outputs")


@pytest.mark.slow
def test_unknown_group_option_and_key_list_choices(tmp_path):
    assert_clean_error(
        run_cli("model=deeplabv9", cwd=tmp_path),
        "model=deeplabv9",
        "choose one of: attention_to_scale, danet, deconvnet, deeplabv1",
    )
    assert_clean_error(run_cli("optimizer.learning_rate=0.1", cwd=tmp_path), "unknown config key", "lr")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_missing_and_wrong_data_root(tmp_path):
    assert_clean_error(run_cli("data=voc", cwd=tmp_path), "data.root is not set", "JPEGImages")
    assert_clean_error(
        run_cli("data=voc", f"data.root={tmp_path}/nope", cwd=tmp_path), f"{tmp_path}/nope", "ImageSets"
    )
    assert not (tmp_path / "outputs").exists(), "a rejected config must not leave a run directory"


@pytest.mark.slow
def test_bad_mask_in_a_worker_names_the_file(tmp_path):
    voc = make_voc_tree(tmp_path, train=2, val=2)
    name = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    Image.open(voc / "SegmentationClass" / f"{name}.png").convert("RGB").save(
        voc / "SegmentationClass" / f"{name}.png"
    )
    result = run_cli(
        "data=voc",
        f"data.root={voc}",
        "data.num_workers=1",
        "data.crop_size=[32,32]",
        "data.batch_size=2",
        *TINY[4:],
        cwd=tmp_path,
    )
    assert_clean_error(result, f"{name}.png is an RGB image")


def test_output_dir_not_writable(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_clean_error(
        run_cli(f"paths.log_dir={blocker}/runs", cwd=tmp_path), "is not writable", "paths.log_dir"
    )


def test_bad_value_names_the_key(tmp_path):
    assert_clean_error(run_cli("optimizer.lr=-1", cwd=tmp_path), "optimizer.lr=-1")


@pytest.mark.slow
def test_resume_then_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    first = run_cli(*TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (last,) = checkpoints(tmp_path / "outputs")
    assert torch.load(last, weights_only=True)["epoch"] == 0

    resumed = run_cli(*TINY, "trainer.max_epochs=2", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = checkpoints(tmp_path / "outputs")[-1]
    assert newest != last and torch.load(newest, weights_only=True)["epoch"] == 1
    assert torch.load(newest, weights_only=True)["global_step"] == 8  # 4 steps per epoch, none repeated

    digest = hashlib.sha256(newest.read_bytes()).hexdigest()
    # A valid std that overflows float32 once images are normalised. The new lr cannot take effect:
    # the resume says so, since the optimizer state it restores holds the old one.
    poisoned = run_cli(
        *TINY,
        "trainer.max_epochs=3",
        "resume=true",
        "data.std=[1e-45,1e-45,1e-45]",
        "optimizer.lr=0.01",
        cwd=tmp_path,
    )
    assert_clean_error(poisoned, "loss is nan at global step 8", "last saved checkpoint is kept")
    assert "optimizer.lr: 0.001 -> 0.01 (kept as before" in poisoned.stdout + poisoned.stderr
    assert hashlib.sha256(newest.read_bytes()).hexdigest() == digest
    assert len(checkpoints(tmp_path / "outputs")) == 2, "the failed run must not write a checkpoint"


def test_the_old_spelling_task_name_is_read_as_command(capsys):
    """``command`` (which command made a run) was ``task_name``, one dot from ``task.name``."""
    from segtrain.cli import main

    main(["task_name=renamed", "--cfg", "job"])
    captured = capsys.readouterr()
    assert "command: renamed" in captured.out and "task_name" not in captured.out
    assert "task_name is now called command" in captured.err


def test_the_old_spellings_of_the_runtime_keys_are_read_as_their_node(capsys):
    """channels_last, compile and threads sat among Lightning's Trainer arguments; they are runtime's, and
    the Trainer's node no longer holds them."""
    from segtrain.cli import main

    main(
        [
            "trainer.channels_last=true",
            "trainer.compile.mode=max-autotune",
            "trainer.threads=3",
            "--cfg",
            "job",
        ]
    )
    captured = capsys.readouterr()
    printed = yaml.safe_load(captured.out)
    assert printed["runtime"]["channels_last"] is True and printed["runtime"]["threads"] == 3
    assert printed["runtime"]["compile"]["mode"] == "max-autotune"
    assert not {"channels_last", "compile", "threads"} & set(printed["trainer"])
    assert "trainer.compile.mode is now called runtime.compile.mode" in captured.err


@pytest.mark.parametrize(
    "args, task",
    [
        # No task typed: the model's is the run's, and --cfg job prints what would run.
        (["model=mask_rcnn", "--cfg", "job"], "instance"),
        (["--cfg", "job", "model=mask_rcnn"], "instance"),
        # eval composes the checkpoint's task (its inference settings too), also with Hydra's flags after it.
        (
            ["eval", "ckpt=tests/fixtures/referring_text_objseg_tiny_4b2a613.ckpt", "--cfg", "job"],
            "referring",
        ),
    ],
)
def test_the_task_a_command_adds_is_in_the_config_it_prints(args, task, capsys, monkeypatch):
    from pathlib import Path

    from segtrain.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    main(args)
    printed = capsys.readouterr().out
    assert f"task:\n  _target_: segtrain.tasks.{task}.task." in printed and f"  name: {task}\n" in printed


def test_a_run_is_validated_once(tmp_path, monkeypatch):
    """The CLI validates a run before Hydra starts it; the job does not check the same config again (a
    sweep's jobs, which the CLI does not see one by one, are checked as they start)."""
    import segtrain.validation
    from segtrain.cli import main

    checks = []
    consistency = segtrain.validation._check_consistency
    monkeypatch.setattr(
        segtrain.validation, "_check_consistency", lambda cfg: checks.append(consistency(cfg))
    )
    monkeypatch.chdir(tmp_path)
    main([*TINY, "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "hydra.run.dir=run"])
    assert len(checks) == 1
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_a_sweep_over_models_trains_their_task_and_refuses_a_mix(capsys):
    """``segtrain -m model=mask_rcnn,panet`` with no task typed trains task=instance in every job; a sweep
    over models of two tasks is one error naming each model's task, before any job starts."""
    from segtrain.cli import precheck

    assert precheck("train", ["model=mask_rcnn,panet", "data=instances_folder"], {"-m", "--cfg"}) == [
        "task=instance"
    ]
    assert "model=mask_rcnn,panet trains task=instance" in capsys.readouterr().err
    assert precheck("train", ["model=unet,fcn"], {"-m", "--cfg"}) == []
    with pytest.raises(SegtrainError, match=r"mask_rcnn \(task=instance\), unet \(task=semantic\)"):
        precheck("train", ["model=mask_rcnn,unet"], {"-m", "--cfg"})
