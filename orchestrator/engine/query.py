"""The query of a round: draw the random subset, map the strategy over shards, merge, select b pool indices.

Kept apart from training (`orchestrator.engine.trial`): a round is a fit step, then this query step, and a trial whose
round 0 was fitted elsewhere (`orchestrator.engine.round0`) runs only this step in that round.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from experiments.errors import AlbenchError
from strategies import REGISTRY, Strategy
from strategies.base import ScoringInputs, ShardResult, merge_shards
from strategies.scoring_heap import run_scoring

ShardMapper = Callable[[Strategy, list[ScoringInputs], int], list[ShardResult]]


class StrategyOutputError(AlbenchError):
    """A strategy's `score` broke its contract (a plugin's, typically): wrong type, shape or pool indices, or NaN.
    Deterministic: the trial fails alone, without retries."""

    def __init__(self, who: str, problem: str, round_index: int | None = None) -> None:
        self.who, self.problem, self.round_index = who, problem, round_index
        where = "" if round_index is None else f" in round {round_index}"
        super().__init__(f"{who}{where}: {problem}")

    def __reduce__(self):  # pickled across Ray by its fields, not by its message
        return StrategyOutputError, (self.who, self.problem, self.round_index)

    def in_round(self, round_index: int) -> StrategyOutputError:
        return StrategyOutputError(self.who, self.problem, round_index)


def map_shards_locally(strategy: Strategy, shards: list[ScoringInputs], b: int) -> list[ShardResult]:
    """The in-process mapper; the orchestrator substitutes one that sends shards to actors."""
    return [run_scoring(lambda shard=shard: score_shard(strategy, shard, b)) for shard in shards]


def score_shard(strategy: Strategy, inputs: ScoringInputs, b: int) -> ShardResult:
    """One shard's map, checked against the strategy protocol, then reduced: what every mapper runs."""
    return strategy.reduce(checked(strategy, inputs, strategy.score(inputs)), b)


def checked(strategy: Strategy, inputs: ScoringInputs, result: object) -> ShardResult:
    """`result` if it is what `score` promises: a ShardResult for exactly the shard's pool indices, with a finite
    score [n] or feature row [n, d] each. Albench's own strategies meet it except on a diverged model (NaN
    scores: `top_b` says that); a plugin's that does not is named, with what it returned."""
    plugin = REGISTRY.plugins().get(strategy.name, [])
    who = f"strategy '{strategy.name}'" + (f" (plugin {plugin[0].provenance})" if plugin else "")
    n = len(inputs.pool_indices)
    if not isinstance(result, ShardResult):
        raise StrategyOutputError(who, f"score() returned {type(result).__name__}, not a ShardResult")
    if not np.array_equal(np.asarray(result.pool_indices), inputs.pool_indices):
        raise StrategyOutputError(
            who, f"score() returned {len(result.pool_indices)} pool indices, not the shard's {n} in its order"
        )
    if result.scores is None and result.features is None:
        raise StrategyOutputError(who, "score() returned neither scores nor features")
    for what, values, want in (("scores", result.scores, "[n]"), ("features", result.features, "[n, d]")):
        if values is None:
            continue
        values = np.asarray(values)
        if values.ndim != len(want.split(",")) or len(values) != n:
            raise StrategyOutputError(
                who, f"score() returned {what} of shape {list(values.shape)}; want {want} with n = {n}, one per image"
            )
        bad = ~np.isfinite(values).reshape(n, -1).all(axis=1)
        if plugin and bad.any():
            raise StrategyOutputError(
                who,
                f"score() returned non-finite {what} (NaN or inf) for {int(bad.sum())} of {n} images "
                f"(pool indices {inputs.pool_indices[bad][:5].tolist()})",
            )
    return result


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
