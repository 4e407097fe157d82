"""The task-generic core: the task config group, the layout, and checkpoints written before it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import segtrain
from segtrain.data.description import DatasetDescription
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
#: Written by segtrain 0.1.0 (before the task group, commands/ and runtime/): a 1-epoch tiny U-Net on shapes.
OLD_CHECKPOINT = FIXTURES / "semantic_unet_small_v0.1.0.ckpt"
#: Its test-split mIoU as segtrain 0.1.0 evaluated it.
OLD_CHECKPOINT_MIOU = 0.011491302390479468
#: Written at 4b2a613, before the task spec, the task registry in conf/task and the task-owned inference keys
#: (2-3 epoch tiny models on the embedded data), with what that commit's eval scored them.
PRE_SPEC_CHECKPOINTS = {
    "semantic_unet_tiny_4b2a613.ckpt": ((), {"mIoU": 0.015347896547308365}),
    "referring_text_objseg_tiny_4b2a613.ckpt": (
        ("inference.mask_threshold=0.2",),
        {"overall_IoU": 0.0373823477179897, "mean_IoU": 0.037856449425306304},
    ),
}


def test_training_imports_no_command_module():
    """Tasks and the run-time plumbing never load a command: the commands sit on top of them."""
    probe = (
        "import sys, segtrain.tasks.semantic.module, segtrain.tasks.instance.module, "
        "segtrain.runtime.trainer, segtrain.runtime.resume, segtrain.runtime.callbacks, "
        "segtrain.runtime.distributed, segtrain.data.statistics; "
        "print(sorted(m for m in sys.modules if m.startswith('segtrain.commands')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def import_graph() -> dict[str, set[str]]:
    """Each segtrain module and the segtrain modules it imports, at the top or inside a function."""
    package = Path(segtrain.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "") in modules:
                imported.add(node.module)
                imported.update(
                    f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules
                )
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = imported - {name}
    return graph


def test_no_import_circle_among_segtrain_modules():
    """No module reaches back to one that imports it, not even by an import inside a function (which a
    check of sys.modules after import cannot see)."""
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (circle := visit(target, [*path, module])):
                return circle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            assert (circle := visit(module, [])) is None, " -> ".join(circle[circle.index(circle[-1]) :])


#: The library and run-time layers, which the commands sit on top of.
LOWER_LAYERS = ("segtrain.tasks", "segtrain.runtime", "segtrain.data", "segtrain.models")


def test_nothing_below_the_commands_imports_a_command_or_the_cli():
    """The layering, read from the source (imports inside functions included): a task, the run-time
    plumbing, the data or a model never imports ``segtrain.commands`` or ``segtrain.cli``."""
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.startswith(LOWER_LAYERS)
        for target in targets
        if target == "segtrain.cli" or target.startswith("segtrain.commands")
    )
    assert upward == []


def test_no_module_is_over_400_lines():
    package = Path(segtrain.__file__).parent
    long = sorted(
        f"{path.relative_to(package)}: {lines}"
        for path in package.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 400
    )
    assert long == []


def contract_members(base: type) -> list[str]:
    """The members ``base`` declares and leaves to each task (they raise NotImplementedError)."""
    import inspect

    members = []
    for name, value in vars(base).items():
        function = getattr(value, "__func__", value)
        if callable(function) and "raise NotImplementedError" in inspect.getsource(function):
            members.append(name)
    return members


def registered_specs() -> dict:
    """Each task of conf/task, found as the commands find it: through its YAML's task._target_."""
    from segtrain.config import config_dir
    from segtrain.tasks import spec_of

    return {path.stem: spec_of(path.stem) for path in sorted((config_dir() / "task").glob("*.yaml"))}


def test_every_task_defines_every_member_of_the_contract():
    from segtrain.tasks.module import TaskModule
    from segtrain.tasks.spec import Task
    from tests.foreground_task import ForegroundTask

    specs = registered_specs()
    assert sorted(specs) == ["instance", "panoptic", "referring", "semantic"]
    specs["foreground"] = ForegroundTask  # the test-only fourth task (tests/test_fourth_task.py)
    spec_members, module_members = contract_members(Task), contract_members(TaskModule)
    assert len(spec_members) >= 10 and len(module_members) >= 5
    for name, spec in specs.items():
        assert spec.name == name and spec.trains_on
        module = spec.module_class()
        assert issubclass(module, TaskModule)
        for cls, base, members in ((spec, Task, spec_members), (module, TaskModule, module_members)):
            for member in [*members, *(["epoch_metrics"] if base is TaskModule else [])]:
                owner = next(klass for klass in cls.__mro__ if member in vars(klass))
                assert owner is not base, f"task {name} leaves {member} to {base.__name__}"


def test_task_specs_import_neither_torch_nor_lightning():
    """Validating a config asks the task's spec, so a config error never waits for torch."""
    probe = (
        "import sys, segtrain.tasks.semantic.task, segtrain.tasks.instance.task, "
        "segtrain.tasks.referring.task, segtrain.tasks.panoptic.task; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pytorch_lightning', 'optuna'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_commands_and_callbacks_call_only_what_the_task_contract_declares():
    """Every member that a command or a callback reads on a task's module (``task.X``, ``pl_module.X``) is
    declared by the module base, as a class member or in its __init__, and every member read on a spec
    (``spec.X``, ``writer.X``) by the spec base."""
    import inspect

    from segtrain.tasks.module import TaskModule
    from segtrain.tasks.spec import Task

    package = Path(segtrain.__file__).parent
    sources = [*(package / "commands").glob("*.py"), package / "runtime" / "callbacks.py"]
    set_in_init = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(TaskModule.__init__)))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            set_in_init.add(node.attr)
    bases = {"task": TaskModule, "pl_module": TaskModule, "spec": Task, "writer": Task}
    called = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in bases:
                    called.add((path.name, node.value.id, node.attr))
    undeclared = sorted(
        f"{file}: {name}.{attr}"
        for file, name, attr in called
        if not hasattr(bases[name], attr) and not (bases[name] is TaskModule and attr in set_in_init)
    )
    assert len({c for c in called if bases[c[1]] is Task}) > 10 and len(called) > 25
    assert undeclared == []


def test_old_checkpoint_metadata_reads_as_a_semantic_description():
    meta = torch.load(OLD_CHECKPOINT, weights_only=True, map_location="cpu")["segtrain"]
    assert "task" not in meta
    description = DatasetDescription.from_metadata(meta)
    assert description.task == "semantic" and description.classes[1] == "disc"
    assert description.in_channels == 3


def test_old_checkpoint_evaluates_predicts_and_exports(tmp_path: Path, monkeypatch):
    """In one process, as the commands run in a notebook (each with its own run directory)."""
    from segtrain.cli import main

    monkeypatch.chdir(tmp_path)
    main(["eval", f"ckpt={OLD_CHECKPOINT}", "hydra.run.dir=eval"])
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(OLD_CHECKPOINT_MIOU, abs=1e-12)

    exported = tmp_path / "model.onnx"
    main(["export", f"ckpt={OLD_CHECKPOINT}", f"output={exported}", "hydra.run.dir=export"])
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["task"] == "semantic" and meta["classes"][0] == "background"

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "red.png")
    for model in (OLD_CHECKPOINT, exported):
        out = tmp_path / f"pred_{model.suffix[1:]}"
        main(["predict", f"ckpt={model}", f"input={images}", f"output={out}", f"hydra.run.dir={out}_run"])
        assert Image.open(out / "red.png").size == (40, 30)


@pytest.mark.parametrize("name", sorted(PRE_SPEC_CHECKPOINTS))
def test_checkpoints_from_before_the_task_spec_evaluate_to_the_same_scores(
    tmp_path: Path, name: str, monkeypatch
):
    from segtrain.cli import main

    overrides, expected = PRE_SPEC_CHECKPOINTS[name]
    monkeypatch.chdir(tmp_path)
    main(["eval", f"ckpt={FIXTURES / name}", *overrides, "hydra.run.dir=eval"])
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_old_checkpoint_logits_on_fixed_images_equal_a_hand_preprocessed_forward():
    """What a preprocessing change would break (the checkpoint predicts nearly one class, so its mIoU alone
    would not notice one): the logits segtrain computes from uint8 images equal the U-Net's forward on
    those images normalised by hand with 0.1.0's stored statistics, (x / 255 - 0.5) / 0.25, RGB order."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segtrain.data.datasets.shapes import Shapes
    from segtrain.tasks import build_task

    stored = torch.load(OLD_CHECKPOINT, weights_only=True, map_location="cpu")
    config = OmegaConf.create(stored["segtrain"]["resolved_config"])
    task = build_task(config).eval()
    task.load_state_dict(stored["state_dict"])
    images = torch.stack([Shapes("test", image_size=48)[i]["image"] for i in range(3)])
    assert images.dtype == torch.uint8
    with torch.no_grad():
        ours = task(images)
    network = instantiate(config.model).eval()
    network.load_state_dict({k.removeprefix("model."): v for k, v in stored["state_dict"].items()})
    by_hand = (images.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        reference = network(by_hand)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert not torch.allclose(network((images.flip(1).float() / 255 - 0.5) / 0.25), reference, atol=1e-2)


def test_a_semantic_checkpoint_given_to_task_instance_is_refused(tmp_path: Path):
    result = run_cli("eval", f"ckpt={OLD_CHECKPOINT}", "task=instance", cwd=tmp_path)
    assert result.returncode == 2
    assert "is a semantic segmentation checkpoint, but the command says task=instance" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_task_of_every_model_and_data_config_is_read_without_importing_it():
    """The task check reads a class's ``task`` from segtrain's source (PANet inherits Mask R-CNN's): the
    same as the imported class says, for every model and data config, and with no torch imported."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from segtrain.config import config_dir
    from segtrain.tasks.declared import config_task

    targets = set()
    for group in ("model", "data"):
        for path in (config_dir() / group).glob("*.yaml"):
            target = OmegaConf.load(path).get("_target_")
            if target:
                targets.add(target)
    assert len(targets) > 20
    read = {target: config_task(target) for target in sorted(targets)}
    assert read == {target: getattr(get_class(target), "task", "semantic") for target in sorted(targets)}
    assert {"semantic", "instance", "referring"} <= set(read.values())
    probe = (
        "import sys; from segtrain.tasks.declared import config_task; "
        "print(config_task('segtrain.models.panet.PANet'), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["instance", "False"]


def test_the_layout_a_missing_data_root_names_is_read_without_importing_the_reader():
    """``data.root`` unset names the dataset's expected layout: read from the reader's source (nifti's is a
    module constant), the same as the imported class's, for every data config's reader."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from segtrain.config import compose, config_groups
    from segtrain.tasks.declared import class_attribute

    targets = set()
    for data in config_groups()["data"]:
        target = OmegaConf.select(compose("config", [f"data={data}"]), "data.dataset._target_")
        if target:
            targets.add(target)
    assert len(targets) > 8
    read = {target: class_attribute(target, "layout", "") for target in sorted(targets)}
    assert read == {target: getattr(get_class(target), "layout", "") for target in sorted(targets)}
    assert sum(bool(layout) for layout in read.values()) >= 8
