"""Active-learning strategies: each declares its training objective, a map over shards of the pool, and a select."""

from __future__ import annotations

from collections.abc import Callable

from experiments.errors import ConfigError
from experiments.specs import QuerySpec
from strategies.badge import BadgeStrategy
from strategies.bait import BaitStrategy
from strategies.base import ScoringInputs, ShardResult, Strategy, merge_shards, top_b
from strategies.coreset import CoresetStrategy
from strategies.fishermask import FisherMaskStrategy
from strategies.gradnorm_query import EntGradNormStrategy, ExpGradNormStrategy, LPLgradStrategy
from strategies.learning_loss import LearningLossStrategy
from strategies.uncertainty import EntropyStrategy, LeastConfidenceStrategy, MarginStrategy, RandomStrategy

STRATEGIES: dict[str, Callable[[QuerySpec], Strategy]] = {
    "random": lambda q: RandomStrategy(),
    "entropy": lambda q: EntropyStrategy(),
    "margin": lambda q: MarginStrategy(),
    "least_confidence": lambda q: LeastConfidenceStrategy(),
    "coreset": lambda q: CoresetStrategy(),
    "badge": lambda q: BadgeStrategy(),
    "bait": lambda q: BaitStrategy(),
    "fishermask": lambda q: FisherMaskStrategy(
        q.fisher_mask_size, q.fisher_mask_whole_last_layer, q.fisher_mask_samples, q.fisher_lambda
    ),
    "learning_loss": lambda q: LearningLossStrategy(),
    "ent_gradnorm": lambda q: EntGradNormStrategy(q.gradnorm_aggregate),
    "exp_gradnorm": lambda q: ExpGradNormStrategy(q.gradnorm_aggregate, q.expected_top_k),
    "lplgrad": lambda q: LPLgradStrategy(q.gradnorm_aggregate),
}
STRATEGY_NAMES = tuple(sorted(STRATEGIES))

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "build_strategy",
    "ScoringInputs",
    "ShardResult",
    "Strategy",
    "merge_shards",
    "top_b",
]


def check_strategy_name(name: str) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"strategy '{name}' is unknown; known: {', '.join(STRATEGY_NAMES)}")
    return name


def build_strategy(name: str, query: QuerySpec | None = None) -> Strategy:
    return STRATEGIES[check_strategy_name(name)](query or QuerySpec())
