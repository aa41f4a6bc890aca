"""Random and the softmax uncertainty baselines: Entropy, Margin, Least-confidence. Higher score = queried first."""

from __future__ import annotations

import torch

from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs
from strategies.views import uniform_hash


class RandomStrategy(Strategy):
    """Uniformly random picks: a seeded random value per pool index (hashed, so sharding cannot change it)."""

    name = "random"
    query_cost = 0.0

    def score(self, inputs: ScoringInputs) -> ShardResult:
        return ShardResult(inputs.pool_indices, scores=uniform_hash(inputs.selection_key, inputs.pool_indices))


class EntropyStrategy(Strategy):
    """Predictive entropy H(p) = -sum_c p_c log p_c."""

    name = "entropy"

    def score(self, inputs: ScoringInputs) -> ShardResult:
        def entropy(out) -> torch.Tensor:
            log_p = torch.log_softmax(out.logits, 1)
            return -(log_p.exp() * log_p).sum(1)

        return ShardResult(inputs.pool_indices, scores=map_outputs(inputs, entropy))


class MarginStrategy(Strategy):
    """Smallest gap between the two likeliest classes first: score = -(p_1 - p_2)."""

    name = "margin"

    def score(self, inputs: ScoringInputs) -> ShardResult:
        def negative_margin(out) -> torch.Tensor:
            top2 = torch.softmax(out.logits, 1).topk(2, dim=1).values
            return top2[:, 1] - top2[:, 0]

        return ShardResult(inputs.pool_indices, scores=map_outputs(inputs, negative_margin))


class LeastConfidenceStrategy(Strategy):
    """Lowest top-class probability first: score = 1 - max_c p_c."""

    name = "least_confidence"

    def score(self, inputs: ScoringInputs) -> ShardResult:
        return ShardResult(
            inputs.pool_indices,
            scores=map_outputs(inputs, lambda out: 1 - torch.softmax(out.logits, 1).amax(1)),
        )
