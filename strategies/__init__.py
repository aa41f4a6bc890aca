"""Active-learning strategies (a registry): each declares its settings, its training objective and networks,
a map over shards of the pool, and a select. Besides albench's own, the registry holds the strategies other
installed packages declare in the entry-point group `albench.strategies` (`experiments.plugins`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from experiments.errors import ConfigError
from experiments.plugins import Plugin, PluginError, Registry
from experiments.specs import StrategySpec, TrainSpec
from strategies.badge import BadgeStrategy
from strategies.bait import BaitStrategy
from strategies.base import ScoringInputs, ShardResult, Strategy, merge_shards, top_b
from strategies.coreset import CoresetStrategy
from strategies.fishermask import FisherMaskStrategy
from strategies.gradnorm_query import EntGradNormStrategy, ExpGradNormStrategy, LPLgradStrategy
from strategies.learning_loss import LearningLossStrategy
from strategies.settings import StrategySettings, yaml_value
from strategies.uncertainty import EntropyStrategy, LeastConfidenceStrategy, MarginStrategy, RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy,
        EntropyStrategy,
        MarginStrategy,
        LeastConfidenceStrategy,
        CoresetStrategy,
        BadgeStrategy,
        BaitStrategy,
        FisherMaskStrategy,
        LearningLossStrategy,
        EntGradNormStrategy,
        ExpGradNormStrategy,
        LPLgradStrategy,
    )
}
STRATEGY_NAMES = tuple(sorted(STRATEGIES))  # albench's own; `REGISTRY.names()` adds the plugins'


def _strategy_class(plugin: Plugin, found: object) -> type[Strategy]:
    """A plugin's strategy is a `Strategy` subclass whose `name` is its entry point's and whose settings are
    `StrategySettings`; anything else is refused, naming the entry point."""
    where = f"strategy '{plugin.name}' (entry point '{plugin.entry_point}' of {plugin.provenance})"
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise PluginError(f"{where} is {found!r}, not a subclass of albench.api.Strategy")
    if getattr(found, "name", None) != plugin.name:
        raise PluginError(
            f"{where}: its class {found.__name__} has name = {getattr(found, 'name', None)!r}; set it to "
            f"'{plugin.name}', the entry point's name, which grids and results use"
        )
    if not (isinstance(found.Settings, type) and issubclass(found.Settings, StrategySettings)):
        raise PluginError(f"{where}: its Settings must subclass albench.api.StrategySettings")
    return found


REGISTRY: Registry[type[Strategy]] = Registry("strategy", STRATEGIES, _strategy_class)

__all__ = [
    "REGISTRY",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "build_strategy",
    "resolve_strategy",
    "settings_of",
    "strategy_class",
    "validate_settings",
    "variant_label",
    "ScoringInputs",
    "ShardResult",
    "Strategy",
    "StrategySettings",
    "merge_shards",
    "top_b",
]


def strategy_class(name: str, planned_with: str | None = None) -> type[Strategy]:
    """A strategy's class, albench's own or a plugin's (`planned_with`: the plugin's package and version the trial
    was planned with); an unknown name is a ConfigError listing the known ones, plugins included."""
    return REGISTRY.get(name, planned_with)


def settings_of(name: str) -> type[StrategySettings]:
    """The settings model of a registered strategy; an unknown name is a ConfigError listing the known ones."""
    return strategy_class(name).Settings


def validate_settings(name: str, given: Mapping[str, Any]) -> StrategySettings:
    """`given` as the strategy's typed settings; an unknown or mistyped one names the strategy and what it takes."""
    model = settings_of(name)
    try:
        return model.model_validate(dict(given))
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise ConfigError(f"strategy '{name}': {problems}; {name} takes: {model.describe()}") from None


def _problem(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{where}'"
    return f"setting '{where}': {error['msg']} (got {error.get('input')!r})"


def resolve_strategy(
    name: str, given: Mapping[str, Any], train: TrainSpec, reference: TrainSpec, label: str = ""
) -> StrategySpec:
    """The spec of a strategy variant: its settings validated, resolved for the schedule (a version of the dataset's
    `reference` schedule), defaults left out."""
    settings = validate_settings(name, given).resolved(train, reference)
    return StrategySpec(name=name, settings=settings.model_dump(mode="json", exclude_defaults=True), label=label)


def variant_label(name: str, given: Mapping[str, Any]) -> str:
    """'bait(lam=0.01)': the name plus the settings a grid entry sets that differ from their defaults."""
    settings = validate_settings(name, given)
    shown = settings.model_dump(mode="json", exclude_defaults=True)
    ordered = [key for key in type(settings).model_fields if key in shown and key in given]
    return f"{name}({', '.join(f'{key}={yaml_value(shown[key])}' for key in ordered)})" if ordered else name


def build_strategy(spec: StrategySpec | str, planned_with: str | None = None) -> Strategy:
    """The strategy a spec names, configured by its settings (a bare name gives the defaults). `planned_with`: a
    plugin's package and version as the trial's spec records them (`TrialSpec.plugins`), checked here."""
    spec = StrategySpec(name=spec) if isinstance(spec, str) else spec
    return strategy_class(spec.name, planned_with)(validate_settings(spec.name, spec.settings))
