"""Selection maths against small direct implementations."""

from __future__ import annotations

import numpy as np

from strategies.base import ShardResult, merge_shards, top_b
from strategies.coreset import k_center_greedy
from strategies.views import uniform_hash


def test_top_b_breaks_ties_by_pool_index_and_merging_shard_lists_is_exact():
    rng = np.random.default_rng(0)
    pool = rng.permutation(1000)[:200]
    scores = rng.integers(0, 20, 200).astype(float)  # many ties on purpose
    whole = top_b(ShardResult(pool, scores), 30).pool_indices
    expected = sorted(zip(-scores, pool, strict=True))[:30]
    assert whole.tolist() == [int(p) for _, p in expected]
    parts = [top_b(ShardResult(pool[s], scores[s]), 30) for s in np.array_split(np.arange(200), 7)]
    assert np.array_equal(top_b(merge_shards(parts), 30).pool_indices, whole)


def test_top_b_rejects_non_finite_scores():
    import pytest

    from experiments.errors import DivergedError

    with pytest.raises(DivergedError, match="pool indices \\[7\\]: the model has diverged"):
        top_b(ShardResult(np.array([3, 7]), np.array([1.0, np.nan])), 1)


def brute_k_center(x, is_centre, b):
    centres = list(np.flatnonzero(is_centre))
    chosen = []
    for _ in range(b):
        best, best_distance = None, -1.0
        for i in np.flatnonzero(~is_centre):
            if i in chosen:
                continue
            d = min(np.sum((x[i] - x[c]) ** 2) for c in centres) if centres else np.inf
            if d > best_distance:
                best, best_distance = i, d
        chosen.append(best)
        centres.append(best)
    return np.array(chosen)


def test_k_center_greedy_matches_the_direct_algorithm():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    is_centre = np.zeros(80, bool)
    is_centre[rng.choice(80, 10, replace=False)] = True
    assert np.array_equal(k_center_greedy(x, is_centre, 15), brute_k_center(x.astype(np.float64), is_centre, 15))


def test_k_center_greedy_handles_duplicates_and_blocks(monkeypatch):
    import strategies.coreset as coreset

    monkeypatch.setattr(coreset, "BLOCK_ELEMENTS", 64)  # force many distance blocks
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 30 points, 3 distinct
    is_centre = np.zeros(30, bool)
    is_centre[0] = True
    picks = k_center_greedy(x, is_centre, 6)
    assert len(set(picks.tolist())) == 6 and 0 not in picks
    assert set(picks[:2].tolist()) == {10, 20}  # the two uncovered points first, lowest index on ties


def test_uniform_hash_is_order_free_and_uniform():
    pool = np.arange(100_000)
    values = uniform_hash(42, pool)
    assert np.array_equal(uniform_hash(42, pool[::-1]), values[::-1])
    assert abs(values.mean() - 0.5) < 0.01 and values.min() >= 0 and values.max() < 1
    assert not np.array_equal(uniform_hash(43, pool), values)
