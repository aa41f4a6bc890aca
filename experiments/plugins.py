"""Plugins: strategies, models and datasets that other installed packages declare by entry points.

A package declares them in its `pyproject.toml`, under the groups `albench.strategies`, `albench.models` and
`albench.datasets` (`docs/plugins.md`). Discovery reads only the installed packages' metadata, never their code:
a plugin is imported when a grid names it, so a broken plugin fails only the grids that use it, with an error
naming its entry point, its package and the import error.

A plugin's identity is its name plus its package's name and version (`Plugin.provenance`): it enters the id of
every trial that uses it (`experiments.specs.TrialSpec.plugins`), and a process that has another version of the
package than the trial was planned with refuses to run it (`Registry.get`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from experiments.errors import ConfigError

GROUPS = {"strategy": "albench.strategies", "model": "albench.models", "dataset": "albench.datasets"}
BUILT_IN = "albench (built in)"

T = TypeVar("T")


class PluginError(ConfigError):
    """A plugin cannot be used: it collides with another name, fails to import, or has another version here."""


class PluginImportError(PluginError):
    """A plugin's entry point does not import in this process (on a Ray worker: a node without the package)."""


class PluginVersionError(PluginError):
    """This process has another version of a plugin's package than the trial was planned with."""


@dataclass(frozen=True)
class Plugin:
    """One entry point of an installed package: `name = value` in the group of its kind."""

    kind: str  # strategy | model | dataset
    name: str
    value: str  # 'albench_bald.strategy:BaldStrategy'
    package: str  # the distribution's name, as pip knows it
    version: str

    @property
    def provenance(self) -> str:
        """'albench-bald 0.1.0': what a trial's id records of the plugin."""
        return f"{self.package} {self.version}"

    @property
    def entry_point(self) -> str:
        return f"{GROUPS[self.kind]}: {self.name} = {self.value}"

    def load(self) -> Any:
        """The object the entry point names; an import error names the entry point, its package and the error."""
        module_name, _, attribute = self.value.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in filter(None, attribute.split(".")):
                found = getattr(found, part)
        except Exception as error:  # any error of the plugin's own import-time code
            raise PluginImportError(
                f"{self.kind} '{self.name}' (entry point '{self.entry_point}' of package {self.provenance}) "
                f"does not import on {platform.node()}: {type(error).__name__}: {error}. Install the package "
                "on every node of the cluster, or send its code with `albench run --ship DIR`"
            ) from None
        return found


@cache
def discovered(kind: str) -> tuple[Plugin, ...]:
    """Every entry point of the kind's group in the installed packages, in the order Python finds them. A
    package found twice on the path (a copy shipped beside one installed) is counted once, the first found,
    as `import` would take it."""
    found, seen = [], set()
    for point in importlib.metadata.entry_points(group=GROUPS[kind]):
        dist = point.dist
        package = dist.metadata["Name"] if dist is not None else "<unknown package>"
        version = dist.version if dist is not None else "<unknown version>"
        if (point.name, package) in seen:
            continue
        seen.add((point.name, package))
        found.append(Plugin(kind, point.name, point.value, package, version))
    return tuple(found)


def forget_discovered() -> None:
    """Reads the installed packages again (after one was installed in this process)."""
    discovered.cache_clear()
    importlib.invalidate_caches()


class Registry(Generic[T]):
    """A kind's names: albench's own, then those of plugins. A name two of them declare is refused when used."""

    def __init__(self, kind: str, built_in: Mapping[str, T], check: Callable[[Plugin, Any], T]) -> None:
        self.kind, self.built_in, self._check = kind, built_in, check  # the package's own dict, as it stands
        self._loaded: dict[tuple[str, str], T] = {}

    def plugins(self) -> dict[str, list[Plugin]]:
        """name -> the plugins that declare it (more than one, or any beside a built-in, is a collision)."""
        found: dict[str, list[Plugin]] = {}
        for plugin in discovered(self.kind):
            found.setdefault(plugin.name, []).append(plugin)
        return found

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({*self.built_in, *self.plugins()}))

    def known(self) -> str:
        """'a, b, c (plugins: bald from albench-bald 0.1.0)': what an unknown name's message lists."""
        plugins = [p for ps in self.plugins().values() for p in ps]
        text = ", ".join(self.names())
        if plugins:
            text += f" (plugins: {', '.join(f'{p.name} from {p.provenance}' for p in plugins)})"
        return text

    def plugin(self, name: str) -> Plugin | None:
        """The plugin that declares `name`, None for a built-in; unknown and colliding names are refused."""
        declared = self.plugins().get(name, [])
        if name in self.built_in and not declared:
            return None
        if not declared:
            raise ConfigError(f"{self.kind} '{name}' is unknown; known: {self.known()}")
        if name in self.built_in or len(declared) > 1:
            owners = ([BUILT_IN] if name in self.built_in else []) + [
                f"{p.provenance} (entry point '{p.entry_point}')" for p in sorted(declared, key=lambda p: p.package)
            ]
            raise PluginError(
                f"{self.kind} '{name}' is declared by {' and by '.join(owners)}; a grid could not say which it "
                f"means. Rename the plugin's entry point (or uninstall one of the packages)"
            )
        return declared[0]

    def provenance(self, name: str) -> str | None:
        """'albench-bald 0.1.0' for a plugin's name, None for a built-in's."""
        plugin = self.plugin(name)
        return None if plugin is None else plugin.provenance

    def get(self, name: str, planned_with: str | None = None) -> T:
        """What `name` names, its plugin imported once per process. `planned_with`: the plugin's package and
        version the trial was planned with; another version here is refused, naming both."""
        if planned_with is not None and not self.plugins().get(name):
            raise PluginImportError(
                f"{self.kind} '{name}' ({planned_with}) is not installed on {platform.node()}: no package here "
                f"declares it in the entry-point group {GROUPS[self.kind]}. Install {planned_with.split()[0]} on every "
                "node of the cluster, or send its code with `albench run --ship DIR`"
            )
        plugin = self.plugin(name)
        if plugin is None:
            if planned_with is not None:
                raise PluginVersionError(
                    f"{self.kind} '{name}' was planned as a plugin of {planned_with}, but here it is albench's own"
                )
            return self.built_in[name]
        if planned_with is not None and planned_with != plugin.provenance:
            raise PluginVersionError(
                f"{self.kind} '{name}': the trial was planned with {planned_with}, but {platform.node()} has "
                f"{plugin.provenance}. Install the same version on every node (or send the driver's with "
                "`albench run --ship DIR`)"
            )
        key = (name, plugin.provenance)
        if key not in self._loaded:
            self._loaded[key] = self._check(plugin, plugin.load())
        return self._loaded[key]

    def listing(self) -> list[tuple[str, str, str]]:
        """(name, where from, problem or '') for every name: what `albench list` shows."""
        rows = []
        for name in self.names():
            try:
                plugin = self.plugin(name)
                if plugin is not None:
                    self.get(name)
                rows.append((name, BUILT_IN if plugin is None else plugin.provenance, ""))
            except PluginError as error:
                declared = self.plugins().get(name, [])
                rows.append((name, ", ".join(p.provenance for p in declared) or BUILT_IN, str(error)))
        return rows
