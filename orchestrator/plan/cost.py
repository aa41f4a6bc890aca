"""What a trial costs before it runs: rounds, images trained and images scored, per strategy.

Counts come from the specs alone (no data is read), so `albench plan` works on a laptop for a cluster grid.
With a measured training throughput (images/s on the target GPU) it turns the training work into hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.specs import TrialSpec
from orchestrator.plan.grid import Grid
from strategies import build_strategy


@dataclass
class StrategyCost:
    strategy: str
    trials: int = 0
    rounds: int = 0
    train_images: int = 0  # image-passes of training: epochs x labeled-set size, summed over rounds
    scored_images: int = 0  # images mapped by the queries (the subset, plus the labeled set for global selections)


def trial_counts(spec: TrialSpec, from_round: int = 0, pool_size: int | None = None) -> tuple[int, int]:
    """(training image-passes, images mapped by queries) of a trial's rounds from `from_round` on.

    Without a subset a query maps the whole unlabeled pool: counted when `pool_size` is given, else as 0.
    """
    counts = spec.regime.labeled_counts[from_round:]
    strategy = build_strategy(spec.strategy)
    scored = 0
    for labeled in counts[:-1]:  # the last round trains and tests, no query
        unlabeled = max(0, pool_size - labeled) if pool_size else 0
        subset = (
            min(spec.regime.subset, unlabeled) if spec.regime.subset and pool_size else spec.regime.subset or unlabeled
        )
        scored += len(strategy.candidates(np.arange(subset), np.arange(subset, subset + labeled)))
    return spec.train.epochs * sum(counts), scored


def trial_work(spec: TrialSpec, from_round: int = 0, pool_size: int | None = None) -> float:
    """A trial's remaining compute in training image-passes: what orders a grid's trials, longest first."""
    train_images, scored_images = trial_counts(spec, from_round, pool_size)
    return train_images + scored_images * build_strategy(spec.strategy).query_cost


def grid_cost(grid: Grid) -> list[StrategyCost]:
    costs: dict[str, StrategyCost] = {}
    for t in grid.trials():
        cost = costs.setdefault(t.strategy.shown, StrategyCost(t.strategy.shown))
        train_images, scored_images = trial_counts(t)
        cost.trials += 1
        cost.rounds += len(t.regime.labeled_counts)
        cost.train_images += train_images
        cost.scored_images += scored_images
    return sorted(costs.values(), key=lambda c: c.strategy)
