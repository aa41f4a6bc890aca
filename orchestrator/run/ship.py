"""What `albench run --ship DIR` sends to every Ray worker: plugin code that the workers' nodes do not have
installed, as Ray `runtime_env` `py_modules`.

Each DIR is a Python package folder (one with `__init__.py`), such as a plugin's `src/<package>`. Beside it goes
the metadata of the installed distribution that declares the grid's plugins from that package (its
`*.dist-info` folder), so that a worker finds the plugin's entry point and version exactly as the driver does
and refuses another version (`experiments.plugins.Registry.get`). The driver must import the plugin from the
folder it ships: else the workers would run other code than the driver planned and recorded in the trial ids.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from experiments.datasets import REGISTRY as DATASETS
from experiments.errors import ConfigError
from experiments.plugins import Plugin
from experiments.specs import TrialSpec
from models import REGISTRY as MODELS
from strategies import REGISTRY as STRATEGIES

REGISTRIES = {"strategy": STRATEGIES, "model": MODELS, "dataset": DATASETS}


def used_plugins(trials: list[TrialSpec]) -> list[Plugin]:
    """The distinct plugins the trials use."""
    names = {"strategy": lambda s: s.strategy.name, "model": lambda s: s.model, "dataset": lambda s: s.dataset.name}
    found: dict[tuple[str, str], Plugin] = {}
    for spec in trials:
        for kind in spec.plugins:
            name = names[kind](spec)
            if (kind, name) not in found:
                found[(kind, name)] = REGISTRIES[kind].plugin(name)
    return list(found.values())


def shipped_modules(folders: list[str], trials: list[TrialSpec]) -> list[str]:
    """The `py_modules` of the run's runtime_env: each folder, and the dist-info of each plugin they hold."""
    modules: list[str] = []
    packages: dict[str, Path] = {}
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        if not (path / "__init__.py").is_file():
            raise ConfigError(
                f"--ship {folder}: not a Python package folder (no __init__.py in {path}); give the folder of the "
                "package a plugin's entry point names, e.g. examples/albench-bald/src/albench_bald"
            )
        packages[path.name] = path
        modules.append(str(path))
    for plugin in used_plugins(trials):
        top = plugin.value.partition(":")[0].split(".")[0]
        if top not in packages:
            continue  # installed on every node, the user says
        spec = importlib.util.find_spec(top)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or not origin.is_relative_to(packages[top]):
            raise ConfigError(
                f"--ship {packages[top]}: this driver imports {top} (plugin {plugin.kind} '{plugin.name}', "
                f"{plugin.provenance}) from {origin.parent if origin else 'nowhere'}, not from the folder it would "
                "ship, so the workers would run other code than the driver planned. Ship the folder the driver "
                f"imports, or install the plugin from the shipped folder (pip install -e)"
            )
        metadata = _dist_info(plugin.package)
        if metadata is not None and str(metadata) not in modules:
            modules.append(str(metadata))
    return modules


def _dist_info(package: str) -> Path | None:
    """The installed distribution's metadata folder (`<name>-<version>.dist-info`), where it is one."""
    try:
        folder = getattr(importlib.metadata.distribution(package), "_path", None)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(folder).resolve() if folder is not None and Path(folder).is_dir() else None
