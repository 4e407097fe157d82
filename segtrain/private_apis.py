"""The private APIs of Lightning, Hydra's Optuna sweeper and Optuna that segtrain overrides or calls.

They carry no compatibility promise, so each is listed here with the parameters segtrain relies on;
``tests/test_private_apis.py`` checks the installed versions against this table and names the entry
that an upgrade broke, before a user meets it as a hang or a traceback in the middle of a run.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


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
        "sweeps.requeue_interrupted fails trials an interruption left running",
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
