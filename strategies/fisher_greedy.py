"""The Fisher-trace greedy of BAIT (Ash et al., NeurIPS 2021), also used by FisherMask (Gul et al. 2024).

Given per-sample factors V_x [C, K] (the rows span x's Fisher information, V_x^T V_x), choose points that
most reduce tr(F_U M^-1), M = lambda I + F_L n_L/(n_L + b) + the chosen points' V^T V (scaled by b/(n_L+b)):

    score(x) = tr( V M^-1 F_U M^-1 V^T (I_C + V M^-1 V^T)^-1 ),   argmax over unchosen candidates,

then M^-1 is updated by Woodbury. Exact and incremental (ALGORITHMS.md note D): for every candidate keep
A_x = V_x M^-1 and B_x = A_x F_U [C, K]; after choosing s with W = (I + A_s V_s^T)^-1 A_s,
A_x -= (A_x V_s^T) W and B_x -= (A_x V_s^T) (W F_U) (old A_x in both). The score is then
tr(B_x A_x^T (I + A_x V_x^T)^-1): one step costs O(N C^2 K + C K^2) instead of O(N C K^2), and no
N x N or per-step K x K inverse is formed. Optional backward pruning (BAIT: forward 2b, prune back to b)
removes, one at a time, the chosen point whose removal raises tr(F_U M^-1) least.
Memory: A and B are 2 N C K numbers, F_U and M^-1 K^2 each (float64).
"""

from __future__ import annotations

import numpy as np


def _traces(a: np.ndarray, bm: np.ndarray, v: np.ndarray, sign: float) -> np.ndarray:
    """tr(B_x A_x^T (sign I + A_x V_x^T)^-1) for every x. a, bm, v: [N, C, K]."""
    c = a.shape[1]
    inner = sign * np.eye(c) + a @ v.transpose(0, 2, 1)  # I + A V^T [N, C, C]
    cross = bm @ a.transpose(0, 2, 1)  # B A^T [N, C, C]
    return (cross * np.linalg.inv(inner).transpose(0, 2, 1)).sum((1, 2))  # tr(cross @ inner^-1)


def _update(a, bm, v_s, a_s, f_u, sign: float) -> None:
    """Woodbury update (sign +1: add s) or downdate (sign -1: remove s) of every A_x and B_x, in place."""
    c = a.shape[1]
    w = np.linalg.solve(sign * np.eye(c) + a_s @ v_s.T, a_s)  # [C, K]
    coupling = a @ v_s.T  # A_x V_s^T [N, C, C], with the old A_x
    bm -= coupling @ (w @ f_u)
    a -= coupling @ w


def fisher_greedy(v: np.ndarray, is_labeled: np.ndarray, b: int, lam: float = 1.0, oversample: int = 1) -> np.ndarray:
    """Positions of b unlabeled points. v: [N, C, K] for every point of the pool seen this round (labeled too).

    F_U averages V^T V over all N points, F_L over the labeled ones; candidates are the unlabeled points.
    With oversample > 1, greedy runs for oversample * b steps, then prunes back to b.
    """
    v = v.astype(np.float64)
    n_labeled, k = int(is_labeled.sum()), v.shape[2]
    rows, labeled_rows = v.reshape(-1, k), v[is_labeled].reshape(-1, k)  # BLAS matrix products, not einsum
    f_u = rows.T @ rows / len(v)
    f_l = labeled_rows.T @ labeled_rows / max(n_labeled, 1)
    m_inv = np.linalg.inv(lam * np.eye(k) + f_l * n_labeled / (n_labeled + b))
    candidates = np.flatnonzero(~is_labeled)
    vc = v[candidates] * np.sqrt(b / (n_labeled + b))  # [N_U, C, K]
    a = vc @ m_inv  # A_x = V_x M^-1
    bm = a @ f_u  # B_x = A_x F_U
    chosen: list[int] = []
    for _ in range(min(oversample * b, len(candidates))):
        scores = _traces(a, bm, vc, 1.0)
        scores[chosen] = -np.inf
        s = int(np.argmax(scores))
        chosen.append(s)
        _update(a, bm, vc[s], a[s].copy(), f_u, 1.0)
    while len(chosen) > b:  # backward pruning: drop the point whose removal costs least
        kept = np.asarray(chosen)
        removal = -_traces(a[kept], bm[kept], vc[kept], -1.0)  # increase of tr(F_U M^-1) if removed
        s = int(kept[np.argmin(removal)])
        chosen.remove(s)
        _update(a, bm, vc[s], a[s].copy(), f_u, -1.0)
    return candidates[np.asarray(chosen, dtype=np.int64)]
