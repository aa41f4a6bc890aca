"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings, never materialising them.

A sample's gradient embedding is g = (e_yhat - p) (x) h, the last-layer weight gradient of the cross-entropy
under its predicted label (C * d numbers). The map keeps only its two factors a = e_yhat - p [C] and u = h [d];
distances use ||a(x)u - c(x)v||^2 = ||a||^2 ||u||^2 + ||c||^2 ||v||^2 - 2 (a.c)(u.v), so one step costs
O(N (C + d)) rather than O(N C d). Selection as in the reference code: the first centre is the largest
||g||^2 (lowest pool index on ties), each next one is drawn with probability proportional to D(x)^2, the
squared distance to the nearest chosen centre; seeding only, no Lloyd iterations. Draws come from the
round's 'select' stream, over candidates in pool-index order, so sharding cannot change them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs


def gradient_factors(out) -> torch.Tensor:
    """[a | u] per sample: a = onehot(argmax p) - p [C], u = the penultimate embedding [d]."""
    p = torch.softmax(out.logits, 1)
    a = F.one_hot(p.argmax(1), p.shape[1]).to(p.dtype) - p
    return torch.cat([a, out.embedding], 1)


def kmeanspp_seeding(a: np.ndarray, u: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of b seeds chosen by k-means++ in the space of a (x) u, with the Kronecker distance identity."""
    a, u = a.astype(np.float64), u.astype(np.float64)
    norms = (a * a).sum(1) * (u * u).sum(1)  # ||g||^2 [N]
    chosen = [int(np.argmax(norms))]
    distance = np.full(len(a), np.inf)
    for _ in range(b - 1):
        c = chosen[-1]
        to_new = norms + norms[c] - 2 * (a @ a[c]) * (u @ u[c])  # ||g_x - g_c||^2
        distance = np.minimum(distance, np.maximum(to_new, 0.0))
        distance[chosen] = 0.0
        total = distance.sum()
        if total <= 0:  # every candidate coincides with a centre: take the first unchosen
            chosen.append(int(np.flatnonzero(~np.isin(np.arange(len(a)), chosen))[0]))
            continue
        chosen.append(int(np.searchsorted(np.cumsum(distance), rng.random() * total, side="right").clip(0, len(a) - 1)))
        while distance[chosen[-1]] == 0:  # a zero-probability point can only be hit at a rounding edge
            chosen[-1] = int(np.flatnonzero(distance > 0)[0])
    return np.asarray(chosen)


class BadgeStrategy(Strategy):
    """Maps the subset to gradient-embedding factors; selects globally by k-means++ seeding."""

    name = "badge"

    def score(self, inputs: ScoringInputs) -> ShardResult:
        n_classes = None

        def factors(out):
            nonlocal n_classes
            n_classes = out.logits.shape[1]
            return gradient_factors(out)

        features = map_outputs(inputs, factors, dtype=np.float32).reshape(len(inputs.pool_indices), -1)
        return ShardResult(inputs.pool_indices, features=features, factor_split=n_classes or 0)

    def reduce(self, result: ShardResult, b: int) -> ShardResult:
        return result  # a global selection: every embedding is needed

    def select(self, merged: ShardResult, b: int, labeled: np.ndarray, selection_key: int = 0) -> np.ndarray:
        split = merged.factor_split
        rng = np.random.default_rng(selection_key)
        return merged.pool_indices[kmeanspp_seeding(merged.features[:, :split], merged.features[:, split:], b, rng)]
