"""The Fisher-trace greedy of BAIT (Ash et al., NeurIPS 2021), also used by FisherMask (Gul et al. 2024).

Given per-sample factors V_x [C, K] (the rows span x's Fisher information, V_x^T V_x), choose points that
most reduce tr(F_U M^-1), M = lambda I + F_L n_L/(n_L + b) + the chosen points' V^T V (scaled by b/(n_L+b)):

    score(x) = tr( V M^-1 F_U M^-1 V^T (I_C + V M^-1 V^T)^-1 ),   argmax over unchosen candidates,

then M^-1 is updated by Woodbury. Exact and incremental (ALGORITHMS.md note D, taken one step further):
each candidate keeps only its two C x C matrices, inner_x = I + V_x M^-1 V_x^T and
cross_x = V_x M^-1 F_U M^-1 V_x^T, so the score is tr(inner_x^-1 cross_x). Adding (sign +1) or removing
(sign -1) point s, with u = M^-1 V_s^T [K, C] and T = (sign I + V_s u)^-1, changes them through
P_x = V_x u and Q_x = V_x M^-1 F_U u, which one tall matrix product [N C, K] x [K, 2C] gives for every x:

    inner_x -= P T P^T,   cross_x += P T (u^T F_U u) T P^T - Q T P^T - P T Q^T,   M^-1 -= u T u^T.

One pick costs O(N C^2 K + C K^2) (a BLAS GEMM, not N tiny products), reads V once and writes nothing of
size N C K; no N x N matrix and no per-step K x K inverse is formed. Setup (F_U, F_L, M_0^-1 and the
initial inner/cross) costs O(N C K^2 + K^3). Optional backward pruning (BAIT: forward 2b, prune back to b)
removes, one at a time, the chosen point whose removal raises tr(F_U M^-1) least.
Memory: V and the scaled candidates (N C K float64 each), three K x K matrices: see `greedy_bytes`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from experiments.errors import ConfigError

CHUNK_ROWS = 8192  # rows of V per setup product: bounds the setup's temporaries


def greedy_bytes(n_points: int, n_candidates: int, c: int, k: int) -> int:
    """Peak working memory of `fisher_greedy`: V and the scaled candidates in float64, F_U, F_L and M^-1."""
    return 8 * (n_points * c * k + n_candidates * c * k + 3 * k * k + 2 * CHUNK_ROWS * k)


def check_fits_memory(n_points: int, n_candidates: int, c: int, k: int, device: torch.device) -> None:
    """Refuse, before the first pick, a selection that cannot fit in the device's memory."""
    need = greedy_bytes(n_points, n_candidates, c, k)
    if device.type == "cuda":
        total, where = torch.cuda.get_device_properties(device).total_memory, "the GPU"
    else:
        total, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
    if need > 0.8 * total:
        raise ConfigError(
            f"the Fisher greedy needs about {need / 2**30:.1f} GiB ({n_points} points x {c} classes x {k} features, "
            f"float64) but {where} has {total / 2**30:.1f} GiB; lower regime.subset, or for fishermask "
            "its mask_size ({name: fishermask, mask_size: K}, with whole_last_layer: false when the last layer alone "
            "is too big)"
        )


def greedy_device() -> torch.device:
    """The GPU this process was given (Ray sets CUDA_VISIBLE_DEVICES to it), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _gram(rows: torch.Tensor) -> torch.Tensor:
    """rows^T rows, CHUNK_ROWS rows at a time."""
    out = rows.new_zeros(rows.shape[1], rows.shape[1])
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        out += chunk.T @ chunk
    return out


class _GreedyState:
    """M^-1 and every candidate's inner_x and cross_x, updated by Woodbury as points are added or removed."""

    def __init__(self, vc: torch.Tensor, m_inv: torch.Tensor, f_u: torch.Tensor) -> None:
        self.vc, self.m_inv, self.f_u = vc, m_inv, f_u
        n, c, k = vc.shape
        self.flat = vc.reshape(n * c, k)
        self.eye = torch.eye(c, dtype=vc.dtype, device=vc.device)
        self.inner = vc.new_empty(n, c, c)
        self.cross = vc.new_empty(n, c, c)
        per_chunk = max(CHUNK_ROWS // c, 1)
        for start in range(0, n, per_chunk):
            v = vc[start : start + per_chunk]
            g = torch.matmul(v, m_inv)  # V_x M^-1
            self.inner[start : start + per_chunk] = self.eye + torch.matmul(g, v.transpose(1, 2))
            self.cross[start : start + per_chunk] = torch.matmul(torch.matmul(g, f_u), g.transpose(1, 2))

    def scores(self, sign: float = 1.0, rows: torch.Tensor | None = None) -> torch.Tensor:
        """tr((sign I + V M^-1 V^T)^-1 V M^-1 F_U M^-1 V^T) for every candidate (or the given rows)."""
        inner = self.inner if rows is None else self.inner[rows]
        cross = self.cross if rows is None else self.cross[rows]
        if sign < 0:
            inner = inner - 2 * self.eye
        return torch.linalg.solve(inner, cross).diagonal(dim1=1, dim2=2).sum(1)

    def apply(self, s: int, sign: float) -> None:
        """Add (sign +1) or remove (sign -1) candidate s."""
        n, c, _ = self.vc.shape
        v_s = self.vc[s]
        u = self.m_inv @ v_s.T  # [K, C]
        t = torch.linalg.inv(sign * self.eye + v_s @ u)
        f_u_u = self.f_u @ u
        pq = self.flat @ torch.cat([u, self.m_inv @ f_u_u], 1)  # [N C, 2C]: P_x and Q_x stacked
        p = pq[:, :c].reshape(n, c, c)
        q = pq[:, c:].reshape(n, c, c)
        pt = torch.matmul(p, t)  # P T
        self.inner -= torch.matmul(pt, p.transpose(1, 2))
        qtp = torch.matmul(torch.matmul(q, t), p.transpose(1, 2))
        self.cross += torch.matmul(torch.matmul(pt, u.T @ f_u_u), pt.transpose(1, 2)) - qtp - qtp.transpose(1, 2)
        self.m_inv -= u @ t @ u.T


def fisher_greedy(
    v: np.ndarray,
    is_labeled: np.ndarray,
    b: int,
    lam: float = 1.0,
    oversample: int = 1,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Positions of b unlabeled points. v: [N, C, K] for every point of the pool seen this round (labeled too).

    F_U averages V^T V over all N points, F_L over the labeled ones; candidates are the unlabeled points.
    With oversample > 1, greedy runs for oversample * b steps, then prunes back to b. Runs in float64 on
    `device` (default: the process's GPU if it has one).
    """
    device = torch.device(device) if device is not None else greedy_device()
    check_fits_memory(len(v), int((~is_labeled).sum()), v.shape[1], v.shape[2], device)
    candidates = np.flatnonzero(~is_labeled)
    with torch.no_grad():
        vt = torch.as_tensor(v).to(device, torch.float64)
        n_labeled, k = int(is_labeled.sum()), vt.shape[2]
        f_u = _gram(vt.reshape(-1, k)) / len(vt)
        f_l = _gram(vt[torch.as_tensor(is_labeled, device=device)].reshape(-1, k)) / max(n_labeled, 1)
        eye = torch.eye(k, dtype=torch.float64, device=device)
        m_inv = torch.linalg.inv(lam * eye + f_l * n_labeled / (n_labeled + b))
        m_inv = (m_inv + m_inv.T) / 2
        del f_l, eye
        vc = vt[torch.as_tensor(candidates, device=device)] * float(np.sqrt(b / (n_labeled + b)))  # [N_U, C, K]
        del vt
        state = _GreedyState(vc, m_inv, f_u)
        chosen: list[int] = []
        for _ in range(min(oversample * b, len(candidates))):
            scores = state.scores()
            scores[chosen] = -torch.inf
            s = int(torch.argmax(scores))
            chosen.append(s)
            state.apply(s, 1.0)
        while len(chosen) > b:  # backward pruning: drop the point whose removal costs least
            removal = -state.scores(-1.0, torch.as_tensor(chosen, device=device))  # rise of tr(F_U M^-1)
            s = chosen[int(torch.argmin(removal))]
            chosen.remove(s)
            state.apply(s, -1.0)
    return candidates[np.asarray(chosen, dtype=np.int64)]
