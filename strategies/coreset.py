"""Core-set (Sener & Savarese 2018) by k-center greedy on penultimate embeddings, labeled set as the first centres."""

from __future__ import annotations

import numpy as np
import torch

from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs

BLOCK_ELEMENTS = 1 << 23  # distances are computed in blocks of at most this many entries: never N x N


def min_sq_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """For each point, the squared distance to its nearest centre [N], in blocks of centres."""
    best = torch.full((len(points),), float("inf"), dtype=points.dtype)
    step = max(1, BLOCK_ELEMENTS // max(len(points), 1))
    for start in range(0, len(centres), step):
        block = torch.cdist(points, centres[start : start + step]).square_()  # [N, step]
        best = torch.minimum(best, block.amin(1))
    return best


def k_center_greedy(features: np.ndarray, is_centre: np.ndarray, b: int) -> np.ndarray:
    """Positions (into features) of b points chosen farthest-first; the first position wins ties."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    candidates = torch.from_numpy(np.flatnonzero(~is_centre))
    points = x[candidates]
    distance = (
        min_sq_distances(points, x[torch.from_numpy(np.flatnonzero(is_centre))])
        if is_centre.any()
        else torch.full((len(points),), float("inf"), dtype=x.dtype)
    )
    chosen = []
    for _ in range(b):
        best = int(torch.argmax(distance))  # argmax returns the first maximum
        chosen.append(best)
        distance = torch.minimum(distance, (points - points[best]).square().sum(1))
        distance[best] = -1.0  # never again, even among exact duplicates
    return candidates[chosen].numpy()


class CoresetStrategy(Strategy):
    """Maps the subset and the labeled set to embeddings; selects globally by k-center greedy."""

    name = "coreset"

    def candidates(self, subset: np.ndarray, labeled: np.ndarray) -> np.ndarray:
        return np.union1d(subset, labeled)

    def score(self, inputs: ScoringInputs) -> ShardResult:
        features = map_outputs(inputs, lambda out: out.embedding, dtype=np.float32)
        return ShardResult(inputs.pool_indices, features=features.reshape(len(inputs.pool_indices), -1))

    def reduce(self, result: ShardResult, b: int) -> ShardResult:
        return result  # a global selection: every embedding is needed

    def select(self, merged: ShardResult, b: int, labeled: np.ndarray, selection_key: int = 0) -> np.ndarray:
        is_centre = np.isin(merged.pool_indices, labeled)
        return merged.pool_indices[k_center_greedy(merged.features, is_centre, b)]
