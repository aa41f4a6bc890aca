"""Active-learning strategies (a registry): each declares its settings, its training objective and networks,
a map over shards of the pool, and a select."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from experiments.errors import ConfigError
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
STRATEGY_NAMES = tuple(sorted(STRATEGIES))

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "build_strategy",
    "resolve_strategy",
    "settings_of",
    "validate_settings",
    "variant_label",
    "ScoringInputs",
    "ShardResult",
    "Strategy",
    "StrategySettings",
    "merge_shards",
    "top_b",
]


def settings_of(name: str) -> type[StrategySettings]:
    """The settings model of a registered strategy; an unknown name is a ConfigError listing the known ones."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy '{name}' is unknown; known: {', '.join(STRATEGY_NAMES)}")
    return STRATEGIES[name].Settings


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


def build_strategy(spec: StrategySpec | str) -> Strategy:
    """The strategy a spec names, configured by its settings (a bare name gives the defaults)."""
    spec = StrategySpec(name=spec) if isinstance(spec, str) else spec
    return STRATEGIES[spec.name](validate_settings(spec.name, spec.settings))
