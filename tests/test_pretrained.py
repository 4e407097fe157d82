"""Paper models start from ImageNet weights: downloaded, read from a local file or URL, or refused with
the two ways out when neither the network nor a file is there."""

import functools
import http.server
import threading

import pytest
import timm
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from segtrain.config import compose
from segtrain.errors import SegtrainError
from tests.conftest import make_voc_tree, run_cli

RESNET18 = ["model=deeplabv3plus", "model.backbone.name=resnet18", "model.backbone.multi_grid=null"]


def test_paper_models_default_to_imagenet_weights():
    for model in ("deeplabv3plus", "pspnet", "fcn8s", "segnet", "deeplabv1", "deconvnet"):
        cfg = compose("config", [f"model={model}", "data=voc", "data.root=/tmp"])
        assert cfg.model.backbone.pretrained is True and cfg.model.backbone.weights is None, model


def test_offline_without_weights_stops_with_both_ways_out_before_the_data(tmp_path):
    root = tmp_path / "voc"
    root.mkdir()  # exists but holds nothing: reading the data would fail with its own message
    result = run_cli(
        *RESNET18,
        "data=voc",
        f"data.root={root}",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "model.backbone.pretrained=true, but the ImageNet weights of resnet18 could not be loaded" in line
    assert "model.backbone.weights=/path/file" in line and "model.backbone.pretrained=false" in line
    assert "Expected layout" not in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over tmp_path/www, as a weights host."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_weights_from_a_url_are_downloaded_once_and_recorded(served, tmp_path, monkeypatch):
    www, url = served
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.25)
    torch.save(reference.state_dict(), www / "resnet18-imagenet.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    overrides = [
        *RESNET18,
        "data=voc",
        "data.root=/tmp",
        f"model.backbone.weights={url}/resnet18-imagenet.pth",
    ]
    model = instantiate(compose("config", overrides).model)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-imagenet.pth"
    assert cached.is_file()
    assert model.backbone.weights_source == f"resnet18: the file {cached}"

    (www / "resnet18-imagenet.pth").unlink()  # the cached copy serves from now on
    model = instantiate(compose("config", overrides).model)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)

    missing = [*RESNET18, "data=voc", "data.root=/tmp", f"model.backbone.weights={url}/nothing.pth"]
    with pytest.raises(InstantiationException) as raised:
        instantiate(compose("config", missing).model)
    assert isinstance(raised.value.__cause__, SegtrainError)  # the CLI prints its message alone
    assert "could not be downloaded (HTTP Error 404" in str(raised.value.__cause__)


def test_training_from_scratch_is_recorded_in_the_checkpoint(tmp_path):
    voc = make_voc_tree(tmp_path)
    result = run_cli(
        *RESNET18,
        "model.backbone.pretrained=false",
        "data=voc",
        f"data.root={voc}",
        "data.crop_size=[32,32]",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone resnet18 initialised from random initialisation" in result.stdout
    (last,) = (tmp_path / "outputs").rglob("last.ckpt")
    meta = torch.load(last, map_location="cpu", weights_only=True)["segtrain"]
    assert meta["backbone_weights"] == ["resnet18: random initialisation (model.backbone.pretrained=false)"]
