"""BADGE's factorised k-means++ seeding against a direct implementation that builds every g = a (x) u."""

from __future__ import annotations

import numpy as np
import torch

from models.outputs import ModelOutput
from strategies.badge import gradient_factors, kmeanspp_seeding


def direct_badge(a: np.ndarray, u: np.ndarray, b: int, rng: np.random.Generator) -> list[int]:
    """The slow, obvious version: explicit C*d embeddings, squared distances to every chosen centre."""
    g = np.stack([np.kron(a_i, u_i) for a_i, u_i in zip(a.astype(np.float64), u.astype(np.float64), strict=True)])
    chosen = [int(np.argmax((g * g).sum(1)))]
    while len(chosen) < b:
        d2 = np.min([((g - g[c]) ** 2).sum(1) for c in chosen], axis=0)
        d2[chosen] = 0.0
        cumulative = np.cumsum(d2)
        chosen.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")))
    return chosen


def test_factorised_seeding_picks_what_the_explicit_embeddings_pick():
    rng = np.random.default_rng(0)
    a, u = rng.normal(size=(300, 7)), rng.normal(size=(300, 16))
    fast = kmeanspp_seeding(a, u, 25, np.random.default_rng(42))
    assert fast.tolist() == direct_badge(a, u, 25, np.random.default_rng(42))
    assert len(set(fast.tolist())) == 25
    assert not np.array_equal(fast, kmeanspp_seeding(a, u, 25, np.random.default_rng(43))), "sampling, seeded"


def test_first_centre_is_the_largest_gradient_embedding_and_duplicates_are_not_repicked():
    a = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    u = np.array([[1.0], [1.0], [1.0], [1.0]])  # points 0, 2, 3 coincide
    picks = kmeanspp_seeding(a, u, 4, np.random.default_rng(0))
    assert picks[0] == 1 and sorted(picks.tolist()) == [0, 1, 2, 3]


def test_gradient_factors_are_the_last_layer_cross_entropy_gradient_under_the_predicted_label():
    torch.manual_seed(0)
    h = torch.randn(5, 4)
    head = torch.nn.Linear(4, 3)
    factors = gradient_factors(ModelOutput(head(h), h, []))
    for i in range(5):
        weight = head.weight.detach().clone().requires_grad_(True)
        logits = h[i] @ weight.T + head.bias.detach()
        loss = torch.nn.functional.cross_entropy(logits[None], logits.argmax()[None])
        (grad,) = torch.autograd.grad(loss, weight)  # = -(e_yhat - p) h^T
        torch.testing.assert_close(-grad, torch.outer(factors[i, :3], factors[i, 3:]))
