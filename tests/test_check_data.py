"""``segtrain check-data``: every error it reports comes with the override that fixes it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segtrain.commands.check_data import check_data
from segtrain.config import compose
from segtrain.data.statistics import median_frequency_weights, scan_split
from segtrain.errors import SegtrainError
from tests.conftest import SHARED_DATA, TINY, checkpoints, run_cli
from tests.layouts import make_ade20k_tree, make_camvid_tree, make_cityscapes_tree, make_folder_tree, save


def run_check(capsys, data: str, root, *overrides: str):
    """(report or None, printed text) of one check in this process."""
    cfg = compose("check_data", [f"data={data}", f"data.root={root}", "check.workers=2", *overrides])
    try:
        report = check_data(cfg)
    except SegtrainError as err:
        return None, capsys.readouterr().out + f"\nerror: {err}"
    return report, capsys.readouterr().out


def test_binary_masks_get_the_label_map_fix_and_pass_with_it(tmp_path, capsys):
    root = make_folder_tree(tmp_path, count=12)
    report, out = run_check(capsys, "folder", root, "data.split=all")
    assert report is None and "fix: data.label_map={255: 1}" in out and "12 image/mask pairs" in out
    report, out = run_check(capsys, "folder", root, "data.split=all", "data.label_map={255:1}")
    assert report is not None and "OK: no errors found" in out
    share = report.scan.counts[:2] / report.scan.counts.sum()
    assert share.sum() == 1 and 0.3 < share[1] < 0.7
    assert report.scan.images_per_second > 0


def test_cityscapes_label_ids_where_train_ids_are_expected(tmp_path, capsys):
    root = make_cityscapes_tree(tmp_path)
    report, out = run_check(capsys, "cityscapes", root, "data.label_map=null")
    assert report is None and "Cityscapes' 34 label ids" in out and "fix: data.label_map=cityscapes" in out
    report, out = run_check(capsys, "cityscapes", root)
    assert report is not None, out


def test_ids_shifted_by_one_suggest_reduce_zero_label(tmp_path, capsys):
    root = make_ade20k_tree(tmp_path)
    report, out = run_check(capsys, "ade20k", root, "data.reduce_zero_label=false")
    assert report is None and "shifted by one" in out and "fix: data.reduce_zero_label=true" in out
    report, out = run_check(capsys, "ade20k", root)
    assert report is not None, out
    assert "warning: classes never present" in out  # 4 tiny masks cannot hold all 150 classes


def test_colour_masks_suggest_the_colour_map(tmp_path, capsys):
    root = make_folder_tree(tmp_path, count=4, values=(0, 1))
    for mask in (root / "masks").iterdir():
        save(np.array([[0, 0, 0], [255, 0, 0]], np.uint8)[np.asarray(Image.open(mask))], mask)
    palette = "data.palette=[[0,0,0],[255,0,0]]"
    report, out = run_check(capsys, "folder", root, "data.split=all", palette)
    assert (
        report is None
        and "4 masks are colour or palette images" in out
        and "fix: data.color_map=palette" in out
    )
    report, out = run_check(capsys, "folder", root, "data.split=all", palette, "data.color_map=palette")
    assert report is not None, out


def test_unreadable_mismatched_and_unpaired_files_are_all_reported(tmp_path, capsys):
    root = make_folder_tree(tmp_path, count=8)
    broken = root / "images" / "img_001.png"
    broken.write_bytes(broken.read_bytes()[:100])
    Image.open(root / "masks" / "img_002.png").resize((40, 32), Image.NEAREST).save(
        root / "masks" / "img_002.png"
    )
    (root / "masks" / "img_003.png").rename(root / "masks" / "orphan.png")
    report, out = run_check(capsys, "folder", root, "data.split=all", "data.label_map={255:1}")
    assert report is None
    assert "2 files have no partner image or mask" in out and "img_003.png" in out and "orphan.png" in out
    assert "1 files cannot be read" in out and "img_001.png" in out
    assert (
        "1 masks differ in size from their images" in out
        and "img_002.png (mask 32 x 40 (H x W), image 32 x 32 (H x W))" in out
    )
    assert "3 error(s) found" in out


@pytest.mark.slow
def test_cli_exit_codes_and_no_run_directory(tmp_path):
    root = make_folder_tree(tmp_path / "data", count=6)
    bad = run_cli("check-data", "data=folder", f"data.root={root}", "data.split=all", cwd=tmp_path)
    assert bad.returncode == 2 and "fix: data.label_map={255: 1}" in bad.stdout
    assert (
        bad.stderr.strip().startswith("error: check-data found 1 error(s)") and "Traceback" not in bad.stderr
    )
    good = run_cli(
        "check-data",
        "data=folder",
        f"data.root={root}",
        "data.split=all",
        "data.label_map={255:1}",
        cwd=tmp_path,
    )
    assert good.returncode == 0 and "OK: no errors found" in good.stdout
    assert not (tmp_path / "outputs").exists()


def train_on_folder(root, *overrides: str, cwd):
    """A tiny training run on a folder tree, as a user starts it."""
    model_and_trainer = [o for o in TINY if not o.startswith("data.")]
    return run_cli(
        "train",
        "data=folder",
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop_size=[32,32]",
        "data.batch_size=2",
        *overrides,
        *model_and_trainer,
        cwd=cwd,
    )


def test_training_stops_on_binary_masks_in_its_first_batches(tmp_path):
    root = make_folder_tree(tmp_path / "data", count=10)
    result = train_on_folder(root, cwd=tmp_path)
    assert result.returncode == 2
    assert "the first training batches: the masks hold only 0 and 255" in result.stderr
    assert "Fix: data.label_map={255: 1}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")
def test_real_camvid_val_is_clean(capsys):
    report, out = run_check(capsys, "camvid", SHARED_DATA / "camvid")
    assert report is not None, out
    assert report.scan.pairs == 101 and "OK: no errors found" in out
    shares = report.scan.counts[:11] / report.scan.counts.sum()
    assert shares.argmax() == 3  # road is the majority class of CamVid


def test_palette_masks_suggest_reading_indices_as_ids(tmp_path, capsys):
    root = make_folder_tree(tmp_path, count=3, values=(0, 1))
    for mask in (root / "masks").iterdir():
        image = Image.fromarray(np.asarray(Image.open(mask)), mode="P")
        image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
        image.save(mask)
    report, out = run_check(capsys, "folder", root, "data.split=all")
    assert (
        report is None
        and "fix: data.dataset.palette_masks=true if the palette indices are the class ids" in out
    )
    report, out = run_check(capsys, "folder", root, "data.split=all", "data.dataset.palette_masks=true")
    assert report is not None, out


def test_median_frequency_weights_match_a_direct_computation(tmp_path):
    root = make_camvid_tree(tmp_path / "CamVid", per_split=4)
    cfg = compose("config", ["data=camvid", f"data.root={root}"])
    _, report = scan_split(cfg.data, "train", workers=1)
    counts, pixels = np.zeros(11), np.zeros(11)
    for mask_path in sorted((root / "trainannot").iterdir()):
        mask = np.asarray(Image.open(mask_path))
        present = np.bincount(mask.ravel(), minlength=12)[:11]
        counts += present
        pixels += (present > 0) * mask.size
    freq = counts / pixels
    expected = np.median(freq) / freq
    assert np.allclose(median_frequency_weights(report, 11), expected, atol=1e-3)


@pytest.mark.slow
def test_training_resolves_median_frequency_weights_into_the_checkpoint(tmp_path):
    root = make_camvid_tree(tmp_path / "CamVid", per_split=4)
    result = run_cli(
        "train",
        "data=camvid",
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop_size=[32,32]",
        "loss.class_weights=median_frequency",
        *[o for o in TINY if not o.startswith("data.")],
        "data.batch_size=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (last,) = checkpoints(tmp_path / "outputs")
    stored = torch.load(last, weights_only=True)["segtrain"]["config"]["loss"]["class_weights"]
    assert len(stored) == 11 and all(isinstance(w, float) for w in stored) and 1.0 in stored
    # The derived values are an overlay, logged and written beside the run; the composed config is untouched.
    (derived,) = (tmp_path / "outputs").rglob("derived.json")
    assert json.loads(derived.read_text()) == {"loss.class_weights": stored}
    logged = result.stdout + result.stderr
    assert "derived from the data" in logged and "loss.class_weights=[" in logged
    (composed,) = (tmp_path / "outputs").rglob(".hydra/config.yaml")
    assert "class_weights: median_frequency" in composed.read_text()


def colour_tree(root, colors):
    """A folder tree whose masks store the given RGB colour of each class id."""
    root = make_folder_tree(root, count=4, values=tuple(range(len(colors))))
    for mask in (root / "masks").iterdir():
        save(np.array(colors, np.uint8)[np.asarray(Image.open(mask))], mask)
    return root


def test_rgb_masks_list_their_colours_and_the_proposed_colour_map_works(tmp_path, capsys):
    colors = [[10, 20, 30], [200, 0, 0], [0, 150, 0]]
    root = colour_tree(tmp_path, colors)
    classes = "data.classes=[sky,car,tree]"
    report, out = run_check(capsys, "folder", root, "data.split=all", classes)
    assert report is None and "Colours found (share of their pixels): [" in out and "%" in out
    assert all(str(color).replace(" ", "") in out.replace(" ", "") for color in colors)
    fix = next(line for line in out.splitlines() if line.strip().startswith("fix: data.color_map="))
    proposal = fix.split("fix: ")[1].split(";")[0]
    assert "check that colour i is the colour of class i" in fix
    report, out = run_check(capsys, "folder", root, "data.split=all", classes, proposal)
    assert report is not None, out  # the proposal, taken as printed, reads every pixel as a class


def test_a_colour_map_that_ignores_almost_everything_is_an_error(tmp_path, capsys):
    root = colour_tree(tmp_path, [[10, 20, 30], [200, 0, 0]])
    report, out = run_check(capsys, "folder", root, "data.split=all", "data.color_map=[[0,0,0],[255,0,0]]")
    assert report is None and "100.0% of the pixels of split 'all' are ignore_index=255" in out
    assert (
        "Colours that data.color_map does not list: [" in out
        and "[10, 20, 30]" in out
        and "[200, 0, 0]" in out
    )


def test_ids_shifted_by_one_with_void_shifted_too(tmp_path, capsys):
    root = make_folder_tree(tmp_path, count=6, values=(1, 2, 3))  # classes 0, 1 stored as 1, 2; void as 3
    report, out = run_check(capsys, "folder", root, "data.split=all")
    assert report is None and "void as 3" in out
    assert "fix: data.label_map={3: 255} data.reduce_zero_label=true" in out
    report, out = run_check(
        capsys, "folder", root, "data.split=all", "data.label_map={3:255}", "data.reduce_zero_label=true"
    )
    assert report is not None, out


def test_a_missing_mask_is_called_missing(tmp_path):
    from segtrain.data.io import read_mask

    with pytest.raises(SegtrainError, match=r"mask .*nothing.png is missing"):
        read_mask(tmp_path / "nothing.png")


def test_an_all_ignored_batch_names_the_label_encoding_not_the_lr(tmp_path):
    root = colour_tree(tmp_path / "data", [[10, 20, 30], [200, 0, 0]])
    result = train_on_folder(
        root, "data.color_map=[[0,0,0],[255,0,0]]", "data.label_check_batches=0", cwd=tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is ignore_index=255, so the loss is undefined" in result.stderr and "check-data" in result.stderr


@pytest.mark.parametrize("task", ["semantic", "instance", "referring"])
def test_every_task_reports_in_one_shape(task, tmp_path, capsys):
    """check-data prints one report shape whatever the task: a header naming the data and split, a table,
    then warnings and errors, and the verdict last."""
    from segtrain.data.checks import DataReport
    from tests.instances import make_shapes_instances

    overrides = {
        "semantic": ["data=shapes"],
        "instance": [
            "task=instance",
            "model=mask_rcnn",
            "data=instances_folder",
            f"data.root={make_shapes_instances(tmp_path, {'train': 2, 'val': 2})}",
        ],
        "referring": ["task=referring", "model=text_objseg_small", "data=shapes_referring"],
    }[task]
    report = check_data(compose("check_data", [*overrides, "check.workers=1"]))
    printed = capsys.readouterr().out.strip().splitlines()
    assert isinstance(report, DataReport) and not report.errors
    assert printed[0].startswith(
        f"data={overrides[-1].split('=')[1] if task != 'instance' else 'instances_folder'}"
    )
    assert "split=val" in printed[0] and printed[-1] == "OK: no errors found"
