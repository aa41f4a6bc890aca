"""What a grid costs before it runs: trials, rounds, images trained and images scored, per strategy.

Counts come from the specs alone (no data is read), so `albench plan` works on a laptop for a cluster grid.
With a measured training throughput (images/s on the target GPU) it turns the training work into hours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.specs import TrialSpec
from orchestrator.grid import Grid
from orchestrator.group import fused_groups
from orchestrator.round0 import round0_groups
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


def round0_saving(grid: Grid) -> tuple[int, int]:
    """(round-0 groups, training image-passes saved): each group trains its round 0 once, not once per member."""
    groups = round0_groups(grid.trials())
    saved = sum((len(g) - 1) * g[0].train.epochs * g[0].regime.initial for g in groups.values())
    return len(groups), saved


SHOWN_GROUPS = 20


def fused_lines(grid: Grid) -> list[str]:
    """The fused groups a run would form (`resources.fuse`, orchestrator/group.py), each with its members."""
    fuse = grid.resources.fuse
    if fuse == 1:
        return []
    groups = fused_groups(grid.trials(), fuse)
    lines = [
        f"fused (resources.fuse: {fuse}): {len(groups)} groups for {sum(map(len, groups))} trials, each group "
        "trains as one (before a run, its complete trials drop out of their groups)"
    ]
    for i, group in enumerate(groups[:SHOWN_GROUPS], 1):
        lines.append(f"  group {i}: {' + '.join(spec.label for spec in group)}")
    if len(groups) > SHOWN_GROUPS:
        lines.append(f"  ... and {len(groups) - SHOWN_GROUPS} more groups")
    return lines


def format_cost(grid: Grid, train_images_per_second: float | None = None) -> str:
    """The plan's table: per strategy as if its trials ran alone; the total trains each round-0 group once."""
    rows = grid_cost(grid)
    n_groups, saved = round0_saving(grid)
    alone = sum(r.train_images for r in rows)
    total = StrategyCost(
        "total",
        sum(r.trials for r in rows),
        sum(r.rounds for r in rows),
        alone - saved,
        sum(r.scored_images for r in rows),
    )
    lines = [f"grid '{grid.name}': {total.trials} trials, {total.rounds} rounds"]
    width = max(18, *(len(r.strategy) + 2 for r in rows))
    header = f"{'strategy':<{width}}{'trials':>8}{'rounds':>8}{'train images':>16}{'scored images':>16}"
    if train_images_per_second:
        header += f"{'train hours':>13}"
    lines.append(header)
    for r in [*rows, total]:
        line = f"{r.strategy:<{width}}{r.trials:>8,}{r.rounds:>8,}{r.train_images:>16,}{r.scored_images:>16,}"
        if train_images_per_second:
            line += f"{r.train_images / train_images_per_second / 3600:>13,.1f}"
        lines.append(line)
    lines.append(
        f"round 0 is trained once per group ({n_groups} groups for {total.trials} trials): the total trains "
        f"{saved:,} image-passes fewer than the strategies' rows add up to ({saved / max(alone, 1):.1%})"
    )
    lines += fused_lines(grid)
    if not any(t.regime.subset for t in grid.trials()):
        lines.append("(a regime without subset scores the whole unlabeled pool: not counted above)")
    return "\n".join(lines)
