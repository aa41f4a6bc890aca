"""The query of a round: draw the random subset, map the strategy over shards, merge, select b pool indices.

Kept apart from training (`orchestrator.engine.trial`): a round is a fit step, then this query step, and a trial whose
round 0 was fitted elsewhere (`orchestrator.engine.round0`) runs only this step in that round.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from strategies import Strategy
from strategies.base import ScoringInputs, ShardResult, merge_shards
from strategies.scoring_heap import run_scoring

ShardMapper = Callable[[Strategy, list[ScoringInputs], int], list[ShardResult]]


def map_shards_locally(strategy: Strategy, shards: list[ScoringInputs], b: int) -> list[ShardResult]:
    """The in-process mapper; the orchestrator substitutes one that sends shards to actors."""
    return [run_scoring(lambda shard=shard: strategy.reduce(strategy.score(shard), b)) for shard in shards]


def draw_subset(labeled_round: torch.Tensor, size: int | None, generator: torch.Generator) -> np.ndarray:
    """A uniformly random subset of the unlabeled pool (sorted pool indices); None or oversize = all of it."""
    order = torch.randperm(len(labeled_round), generator=generator)
    unlabeled = order[labeled_round[order] < 0].numpy()
    return np.sort(unlabeled if size is None else unlabeled[:size])


def query(
    strategy: Strategy,
    make_inputs: Callable[[np.ndarray], ScoringInputs],
    subset: np.ndarray,
    labeled: np.ndarray,
    b: int,
    n_shards: int = 1,
    map_shards: ShardMapper = map_shards_locally,
) -> np.ndarray:
    """Exactly b unique unlabeled pool indices; the same for any n_shards."""
    candidates = np.sort(strategy.candidates(subset, labeled))
    shards = [make_inputs(part) for part in np.array_split(candidates, n_shards) if len(part)]
    key = shards[0].selection_key if shards else 0
    strategy = strategy.prepare(make_inputs, candidates, key)  # once, in this process: every shard sees the same
    picks = strategy.select(merge_shards(map_shards(strategy, shards, b)), b, labeled, key)
    if (
        len(picks) != b
        or len(np.unique(picks)) != b
        or np.isin(picks, labeled).any()
        or not np.isin(picks, subset).all()
    ):
        raise RuntimeError(
            f"strategy {strategy.name} returned an invalid selection (want {b} unique unlabeled subset indices)"
        )
    return np.asarray(picks, dtype=np.int64)
