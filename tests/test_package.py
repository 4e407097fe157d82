"""The built wheel carries conf/ and finds it when installed, outside the source tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[1]


def test_installed_wheel_finds_its_configs(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)], check=True
    )
    (wheel,) = dist.glob("segtrain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "segtrain/conf/config.yaml" in names and "segtrain/conf/model/deeplabv3plus.yaml" in names
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **OFFLINE_ENV}
    listing = subprocess.run(
        [sys.executable, "-m", "segtrain", "list"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    assert f"configs in {site}/segtrain/conf" in listing.stdout and "deeplabv3plus" in listing.stdout
    composed = subprocess.run(
        [sys.executable, "-m", "segtrain", "train", "--cfg", "job", "data=voc", "data.root=/x"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert composed.returncode == 0, composed.stderr
    assert "aeroplane" in composed.stdout
