"""The strategy protocol: a map over shards of the scored subset, a merge, and a select of exactly b pool indices.

A round's query is, for any strategy:

    candidates = strategy.candidates(subset, labeled)          # global pool indices to map over
    strategy   = strategy.prepare(make_inputs, candidates, key) # per-round state shared by all shards (a mask)
    partials   = [strategy.reduce(strategy.score(inputs_of(shard)), b) for shard in split(candidates)]
    picks      = strategy.select(merge_shards(partials), b, labeled, selection_key)

A strategy also declares what it trains: its `objective` and any networks of its own (`auxiliary_networks`),
built and checkpointed by the engine under their names. The engine never branches on the strategy's type.
Only global pool indices cross these boundaries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from experiments.errors import DivergedError
from models.augment import Normalizer
from models.objective import CROSS_ENTROPY, Objective
from strategies.chunk_sizing import ChunkSizer
from strategies.scoring_heap import release_freed_memory
from strategies.settings import StrategySettings
from strategies.views import scoring_view

SCORE_BATCH_SIZE = 256  # default chunk of scoring: a mechanic that bounds peak memory, never changes a pick

# name -> builder(backbone, image_shape) of a network the strategy trains beside the backbone
NetworkBuilder = Callable[[nn.Module, tuple[int, int, int]], nn.Module]


@dataclass(frozen=True)
class ScoringInputs:
    """What one shard's map needs. Picklable, so a shard can be scored by another process."""

    backbone: nn.Module
    images: torch.Tensor  # uint8 [n, C, H, W]: the shard's images, on the scoring device
    pool_indices: np.ndarray  # int64 [n]: their global pool indices
    normalize: Normalizer
    batch_size: int  # scoring chunk size (bounds peak memory)
    selection_key: int  # this round's 'select' random stream, for seeded tie-breaks and sampling
    augment_padding: int | None = None  # score augmented views (crop padding), None = test-time views
    networks: Mapping[str, nn.Module] = field(default_factory=dict)  # the strategy's own trained networks
    grow_chunks: bool = False  # on a GPU, chunks after the first as large as memory allows (score_batch_size: auto)

    def batches(self):
        """(positions, normalised float batch) pairs, `batch_size` at a time (or growing: `grow_chunks`)."""
        sizer = ChunkSizer(self.batch_size, self.grow_chunks, self.images.device)
        start = 0
        while start < len(self.pool_indices):
            stop = min(start + sizer.size, len(self.pool_indices))
            sizer.begin()
            yield slice(start, stop), scoring_view(self, start, stop)
            sizer.end(stop - start)
            release_freed_memory()
            start = stop


@dataclass(frozen=True)
class ShardResult:
    """A map's output for some pool indices: a score each, or a feature vector each (global selections)."""

    pool_indices: np.ndarray  # int64 [n]
    scores: np.ndarray | None = None  # float64 [n]
    features: np.ndarray | None = None  # float32 [n, d]
    factor_split: int = 0  # features = [first factor | second factor] split at this column (BADGE: C | d)

    def take(self, positions: np.ndarray) -> ShardResult:
        return ShardResult(
            self.pool_indices[positions],
            None if self.scores is None else self.scores[positions],
            None if self.features is None else self.features[positions],
            self.factor_split,
        )


def merge_shards(parts: list[ShardResult]) -> ShardResult:
    """Concatenate shard outputs, ordered by pool index (so the merge is independent of the sharding)."""
    pool = np.concatenate([p.pool_indices for p in parts])
    merged = ShardResult(
        pool,
        None if parts[0].scores is None else np.concatenate([p.scores for p in parts]),
        None if parts[0].features is None else np.concatenate([p.features for p in parts]),
        parts[0].factor_split,
    )
    return merged.take(np.argsort(pool, kind="stable"))


def top_b(result: ShardResult, b: int) -> ShardResult:
    """The b highest scores, ties broken by the lower pool index; top-b of per-shard top-b lists is exact."""
    if not np.all(np.isfinite(result.scores)):
        bad = result.pool_indices[~np.isfinite(result.scores)][:5]
        raise DivergedError(
            f"non-finite query scores at pool indices {bad.tolist()}: the model has diverged; lower train.lr"
        )
    order = np.lexsort((result.pool_indices, -result.scores))
    return result.take(order[:b])


class Strategy(ABC):
    """Base of every strategy. Subclasses set `name` (and `Settings` where they have any) and implement `score`.

    The constructor's one argument is the strategy's settings, so whatever configures a strategy is reachable
    from a grid: `{name: bait, lam: 0.01}`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[StrategySettings]] = StrategySettings
    # networks trained beside the backbone, by name; their initial weights come from the (seed, 'init_<name>') stream
    auxiliary_networks: ClassVar[Mapping[str, NetworkBuilder]] = {}
    # Rough compute of a query per mapped image, in training image-passes (one forward and backward), selection
    # included. Only the order in which a grid's trials start depends on it (longest first, so the run does not
    # end on one long trial): a forward pass costs about a third of a training pass.
    query_cost: ClassVar[float] = 1 / 3

    def __init__(self, settings: StrategySettings | None = None) -> None:
        self.settings = self.Settings() if settings is None else settings
        if type(self.settings) is not self.Settings:
            raise TypeError(f"{self.name} takes {self.Settings.__name__}, got {type(self.settings).__name__}")

    @property
    def objective(self) -> Objective:
        """What training minimises for this strategy: cross-entropy unless it trains networks of its own."""
        return CROSS_ENTROPY

    def candidates(self, subset: np.ndarray, labeled: np.ndarray) -> np.ndarray:
        """The pool indices the map runs over: the random unlabeled subset, by default."""
        return subset

    def prepare(
        self, make_inputs: Callable[[np.ndarray], ScoringInputs], candidates: np.ndarray, selection_key: int
    ) -> Strategy:
        """This round's strategy, before the map: state every shard must share (FisherMask's mask). Default: self."""
        return self

    @abstractmethod
    def score(self, inputs: ScoringInputs) -> ShardResult:
        """The per-sample map over one shard."""

    def reduce(self, result: ShardResult, b: int) -> ShardResult:
        """Shrinks one shard's output before the merge without changing the selection (top-b for scores)."""
        return top_b(result, b)

    def select(self, merged: ShardResult, b: int, labeled: np.ndarray, selection_key: int = 0) -> np.ndarray:
        """Exactly b unique unlabeled pool indices, from the merged shard outputs (`selection_key` seeds sampling)."""
        return top_b(merged, b).pool_indices

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
