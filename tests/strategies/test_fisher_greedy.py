"""The incremental Fisher greedy (BAIT, FisherMask) against the obvious loop that recomputes M^-1 every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strategies.bait import last_layer_fisher_factors
from strategies.fisher_greedy import fisher_greedy


def direct_greedy(v, is_labeled, b, lam, oversample):
    """As the reference code: explicit M^-1, full trace score for every candidate, Woodbury, then pruning."""
    n_l, k = int(is_labeled.sum()), v.shape[2]
    f_u = sum(x.T @ x for x in v) / len(v)
    f_l = sum(x.T @ x for x in v[is_labeled]) / max(n_l, 1)
    m_inv = np.linalg.inv(lam * np.eye(k) + f_l * n_l / (n_l + b))
    candidates = np.flatnonzero(~is_labeled)
    vc = v[candidates] * np.sqrt(b / (n_l + b))
    eye = np.eye(v.shape[1])

    def trace(x, sign):
        return np.trace(x @ m_inv @ f_u @ m_inv @ x.T @ np.linalg.inv(sign * eye + x @ m_inv @ x.T))

    chosen = []
    for _ in range(oversample * b):
        scores = [trace(vc[i], 1.0) if i not in chosen else -np.inf for i in range(len(vc))]
        s = int(np.argmax(scores))
        chosen.append(s)
        x = vc[s]
        m_inv = m_inv - m_inv @ x.T @ np.linalg.inv(eye + x @ m_inv @ x.T) @ x @ m_inv
    while len(chosen) > b:
        s = chosen[int(np.argmin([-trace(vc[i], -1.0) for i in chosen]))]
        chosen.remove(s)
        x = vc[s]
        m_inv = m_inv - m_inv @ x.T @ np.linalg.inv(-eye + x @ m_inv @ x.T) @ x @ m_inv
    return candidates[chosen]


@pytest.mark.parametrize(("oversample", "lam"), [(1, 1.0), (2, 1.0), (2, 0.01)])
def test_incremental_greedy_picks_what_the_direct_loop_picks(oversample, lam):
    rng = np.random.default_rng(oversample)
    v = rng.normal(size=(60, 3, 8))
    is_labeled = np.zeros(60, bool)
    is_labeled[rng.choice(60, 12, replace=False)] = True
    fast = fisher_greedy(v, is_labeled, 6, lam, oversample)
    assert fast.tolist() == direct_greedy(v, is_labeled, 6, lam, oversample).tolist()
    assert len(set(fast.tolist())) == 6 and not is_labeled[fast].any()


def test_bait_factors_give_the_true_last_layer_fisher():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3, bias=False).double()
    h = torch.randn(2, 4, dtype=torch.float64)
    p = torch.softmax(head(h), 1)
    v = last_layer_fisher_factors(p.detach().numpy(), h.numpy())
    for i in range(2):
        fisher = np.zeros((12, 12))
        for c in range(3):
            (g,) = torch.autograd.grad(torch.log_softmax(head(h[i : i + 1]), 1)[0, c], head.weight)
            fisher += p[i, c].item() * np.outer(g.flatten(), g.flatten())
        np.testing.assert_allclose(v[i].T @ v[i], fisher, atol=1e-12)
