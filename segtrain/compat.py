"""Where segtrain reaches the private APIs of Lightning, Hydra, OmegaConf, torch, torchvision and Optuna.

They carry no compatibility promise. Every other module reaches them through this one: the private
classes it subclasses (imported when first asked for, so that importing this module costs nothing) and
the accessors below. Each is listed in ``PRIVATE_APIS`` with the parameters segtrain relies on, and so
are the private hooks segtrain's subclasses override; ``tests/test_compat.py`` checks the installed
versions against that table, and that no other module reaches a private name.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

#: Private classes and functions other modules import from here, and where they live.
_LAZY = {
    "SubprocessScriptLauncher": (
        "pytorch_lightning.strategies.launchers.subprocess_script",
        "_SubprocessScriptLauncher",
    ),
    "OptunaSweeperImpl": ("hydra_plugins.hydra_optuna_sweeper._impl", "OptunaSweeperImpl"),
    "create_params_from_overrides": (
        "hydra_plugins.hydra_optuna_sweeper._impl",
        "create_params_from_overrides",
    ),
    # A tensor's shape as a tensor, which a traced ONNX graph keeps dynamic (the operator itself, which
    # TorchScript also compiles).
    "shape_as_tensor": ("torch", "_shape_as_tensor"),
    # What torch.compile has done in this process (frames, graphs, graph breaks by reason): bench's counts.
    "dynamo_counters": ("torch._dynamo.utils", "counters"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)


#: The third-party message texts segtrain parses into its own errors (``segtrain.errors``); each is pinned
#: by a test that makes the library say it.
MESSAGE_FORMATS = {
    "hydra_missing_option": r"Could not find '([^']+)/([^'/]+)'",
    "hydra_unknown_key": r"Could not override '([^']+)'",
    "hydra_present_key": r"Could not append to config. An item is already at '([^']+)'",
    "hydra_instantiate_target": r"target '([^']+)'",
    "hydra_instantiate_key": r"full_key: (\S+)",
    "python_unexpected_keyword": r"unexpected keyword argument '(\w+)'",
}


def message_match(name: str, text: str) -> re.Match | None:
    return re.search(MESSAGE_FORMATS[name], text)


def config_node(config, key):
    """OmegaConf's node of ``key`` under ``config`` (a DictConfig or ListConfig), interpolations kept."""
    return config._get_node(key)


def unresolved(config, key) -> Any:
    """The value of ``key`` as written, before its interpolations are resolved."""
    return config._get_node(key)._value()


def stop_on_every_rank(trainer) -> None:
    """Tells Lightning that a SIGTERM arrived, so that this rank stops as the signalled one does."""
    trainer._signal_connector.received_sigterm = True


def job_outcome(result) -> Any:
    """What a Hydra job returned or raised (``JobReturn.return_value`` raises the exception again)."""
    return result._return_value


def trial_id(trial) -> int:
    """An Optuna trial's id in its storage (``number`` counts within the study)."""
    return trial._trial_id


def fail_trial(study, trial) -> None:
    """Marks a running trial as failed in the study's storage."""
    import optuna

    study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class PrivateAPI:
    #: ``module:Object`` or ``module:Object.attribute``.
    name: str
    #: The parameter names segtrain passes or overrides with, in order (None: not a callable checked).
    parameters: tuple[str, ...] | None
    #: Where segtrain depends on it, and why.
    used_by: str
    #: Instance attributes the object's ``__init__`` or methods must still set.
    attributes: tuple[str, ...] = ()


PRIVATE_APIS = (
    PrivateAPI(
        "pytorch_lightning.callbacks.progress.rich_progress:RichProgressBar._get_train_description",
        ("self", "current_epoch"),
        "callbacks.ProgressBar overrides it to count epochs from 1, as the tables and log lines do",
    ),
    PrivateAPI(
        "pytorch_lightning.strategies.launchers.subprocess_script:_SubprocessScriptLauncher.__init__",
        ("self", "cluster_environment", "num_processes", "num_nodes"),
        "distributed.ConfigLauncher subclasses it to start ranks on the job's config, not sys.argv",
        attributes=("procs", "cluster_environment", "num_processes", "num_nodes"),
    ),
    PrivateAPI(
        "pytorch_lightning.strategies.launchers.subprocess_script:_SubprocessScriptLauncher._call_children_scripts",
        ("self",),
        "distributed.ConfigLauncher overrides it",
    ),
    PrivateAPI(
        "pytorch_lightning.strategies.launchers.subprocess_script:_SubprocessScriptLauncher."
        "_check_can_spawn_children",
        ("self",),
        "distributed.ConfigLauncher calls it",
    ),
    PrivateAPI(
        "pytorch_lightning.strategies:DDPStrategy._configure_launcher",
        ("self",),
        "distributed.DDPStrategy overrides it to install ConfigLauncher",
        attributes=("_launcher",),
    ),
    PrivateAPI(
        "pytorch_lightning.overrides.distributed:UnrepeatedDistributedSampler.__init__",
        ("self", "args", "kwargs"),
        "data.datamodule: validation without repeated images",
    ),
    PrivateAPI(
        "pytorch_lightning.utilities.exceptions:SIGTERMException",
        None,
        "reporting.report_errors turns Lightning's exit 0 on SIGTERM into 143",
    ),
    PrivateAPI(
        "pytorch_lightning.trainer.connectors.signal_connector:_SignalConnector.__init__",
        ("self", "trainer"),
        "distributed.StopTogether sets trainer._signal_connector.received_sigterm on every rank at once",
        attributes=("received_sigterm",),
    ),
    PrivateAPI(
        "pytorch_lightning.trainer:Trainer.__init__",
        None,
        "distributed.StopTogether reaches the signal connector",
        attributes=("_signal_connector",),
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._process_searchspace_config",
        ("self",),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._parse_sweeper_params_config",
        ("self",),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._to_grid_sampler_choices",
        ("self", "distribution"),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._get_directions",
        ("self",),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._configure_trials",
        ("self", "trials", "search_space_distributions", "fixed_params"),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper:OptunaSweeper",
        None,
        "hydra_plugins.segtrain_sweeper builds its own impl, to which setup and sweep delegate",
        attributes=("sweeper",),
    ),
    PrivateAPI(
        "hydra_plugins.hydra_optuna_sweeper._impl:create_params_from_overrides",
        ("arguments",),
        "sweeps.ResumableOptunaSweeper",
    ),
    PrivateAPI(
        "hydra.core.utils:JobReturn",
        None,
        "sweeps.trial_outcome reads _return_value",
        attributes=("_return_value",),
    ),
    PrivateAPI(
        "optuna.storages:RDBStorage.set_trial_state",
        ("self", "trial_id", "state"),
        "sweeps.requeue_interrupted fails trials an interruption left running (fail_trial)",
    ),
    PrivateAPI(
        "optuna.study:Study.__init__",
        None,
        "fail_trial reaches the study's storage",
        attributes=("_storage",),
    ),
    PrivateAPI(
        "optuna.trial:Trial.__init__",
        None,
        "sweeps numbers trial jobs and fails interrupted trials by storage id (trial_id)",
        attributes=("_trial_id",),
    ),
    PrivateAPI(
        "pytorch_lightning.loggers.csv_logs:ExperimentWriter._check_log_dir_exists",
        ("self",),
        "loggers: segtrain's CSV writer overrides it (a resumed run appends to its own metrics)",
    ),
    PrivateAPI(
        "omegaconf.basecontainer:BaseContainer._get_node",
        ("self", "key"),
        "config_node, unresolved: a key's node with its interpolation kept",
    ),
    PrivateAPI(
        "omegaconf.nodes:ValueNode._value",
        ("self",),
        "unresolved: the text of an interpolation",
    ),
    PrivateAPI(
        "torch._dynamo.utils:counters",
        None,
        "dynamo_counters: runtime.profiling counts frames, graphs and graph breaks for segtrain bench",
    ),
    PrivateAPI(
        "torch:_shape_as_tensor",
        None,
        "shape_as_tensor: models.detection.resize_within's size stays dynamic in the ONNX graph",
    ),
    PrivateAPI(
        "torchvision.models.detection.transform:GeneralizedRCNNTransform.__init__",
        None,
        "models.detection.StableSizeTransform reads it (self._skip_resize: TorchScript compiles the method)",
        attributes=("_skip_resize",),
    ),
)


def resolve(name: str):
    module_name, _, path = name.partition(":")
    target = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _owner_source(entry: PrivateAPI) -> str:
    module_name, _, path = entry.name.partition(":")
    owner = resolve(f"{module_name}:{path.split('.')[0]}")
    return "".join(
        inspect.getsource(cls)
        for cls in inspect.getmro(owner)
        if cls.__module__.split(".")[0] == module_name.split(".")[0]
    )


def check(entry: PrivateAPI) -> str | None:
    """None when the installed packages still provide ``entry`` as listed, else what changed."""
    try:
        target = resolve(entry.name)
    except (ImportError, AttributeError) as err:
        return f"{entry.name} is gone ({err}); used by {entry.used_by}"
    if entry.parameters is not None:
        found = tuple(inspect.signature(target).parameters)
        if found[: len(entry.parameters)] != entry.parameters:
            expected = entry.parameters
            return f"{entry.name} now takes {found}, segtrain expects {expected}; used by {entry.used_by}"
    source = _owner_source(entry) if entry.attributes else ""
    missing = [name for name in entry.attributes if f"self.{name}" not in source and f"{name}:" not in source]
    if missing:
        return f"{entry.name} no longer sets {missing}; used by {entry.used_by}"
    return None
