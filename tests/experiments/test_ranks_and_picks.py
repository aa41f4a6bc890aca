"""The report's newer statistics on fixtures worked out by hand: the critical difference of mean ranks
(Friedman + Nemenyi), the pairwise penalty matrix (paired t-tests), and the class histogram of the picks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.report.picks import balance, dataset_key_of, pick_counts
from experiments.report.ranks import critical_difference, nemenyi_q, penalty_matrix
from experiments.results import labels_file
from tests.conftest import tiny_spec


def rows(table: dict, regimes=("r1",)) -> pd.DataFrame:
    """{(strategy, n_labeled): [accuracy per seed]} -> report rows (one dataset)."""
    return pd.DataFrame(
        [
            {"dataset": "d", "regime": regime, "strategy": s, "n_labeled": n, "seed": seed, "test_accuracy": a}
            for regime in regimes
            for (s, n), accuracies in table.items()
            for seed, a in enumerate(accuracies)
        ]
    )


# One seed; per block the ranks are: 10: A1 B2 C3; 20: A1 C2 B3; 30: A1.5 B1.5 C3 (a tie); 40: A1 C2 B3.
BLOCKS = {
    ("A", 10): [0.5], ("B", 10): [0.4], ("C", 10): [0.3],
    ("A", 20): [0.6], ("B", 20): [0.5], ("C", 20): [0.55],
    ("A", 30): [0.7], ("B", 30): [0.7], ("C", 30): [0.6],
    ("A", 40): [0.8], ("B", 40): [0.6], ("C", 40): [0.7],
}  # fmt: skip


def test_mean_ranks_friedman_and_the_nemenyi_critical_difference_by_hand():
    result = critical_difference(rows(BLOCKS, regimes=("r1", "r2")))  # the same 4 blocks in 2 regimes: N = 8
    # mean ranks: A (1+1+1.5+1)/4 = 1.125, B (2+3+1.5+3)/4 = 2.375, C (3+2+3+2)/4 = 2.5
    assert result.mean_ranks.to_dict() == {"A": 1.125, "B": 2.375, "C": 2.5}
    assert result.n_blocks == 8
    # chi2 = 12 N / (k (k+1)) * (sum R^2 - k (k+1)^2 / 4) = 8 * (13.15625 - 12) = 9.25, divided by the tie
    # correction 1 - sum(t^3 - t) / (N k (k^2 - 1)) = 1 - 2 * 6 / (8 * 3 * 8) = 0.9375: 9.8667; p = exp(-chi2 / 2)
    assert result.friedman_statistic == pytest.approx(9.25 / 0.9375)
    assert result.friedman_p == pytest.approx(np.exp(-9.25 / 0.9375 / 2))
    # Demsar's table (3 decimals): q_0.05 = 2.343 for k = 3; CD = 2.343 * sqrt(3 * 4 / (6 * 8)) = 1.1715
    assert nemenyi_q(3) == pytest.approx(2.343, abs=1e-3)
    assert result.cd == pytest.approx(2.343 * np.sqrt(12 / 48), abs=1e-3)
    # B and C lie within CD of each other (0.125); A is 1.25 and 1.375 from them: beyond
    assert result.groups() == [["B", "C"]]


def test_with_half_the_blocks_the_critical_difference_grows_and_joins_all_three():
    result = critical_difference(rows(BLOCKS))  # N = 4: CD = 2.343 * sqrt(0.5) = 1.657 > 1.375
    assert result.cd == pytest.approx(2.343 * np.sqrt(0.5), abs=1e-3)
    assert result.groups() == [["A", "B", "C"]]


def test_the_penalty_matrix_counts_significant_paired_wins_by_hand():
    table = {
        # block 10: A - B = [0.10, 0.11, 0.09]: t = 17.3, df 2, p = 1 - t / sqrt(t^2 + 2) = 0.0033 -> A beats B
        ("A", 10): [0.50, 0.60, 0.70], ("B", 10): [0.40, 0.49, 0.61], ("C", 10): [0.30, 0.39, 0.51],
        # block 20: A - B = [-0.1, 0.1, 0.05]: t = 0.28, p = 0.81 -> neither
        ("A", 20): [0.50, 0.60, 0.70], ("B", 20): [0.60, 0.50, 0.65], ("C", 20): [0.10, 0.10, 0.10],
    }  # fmt: skip
    # A - C: block 10 [0.2, 0.21, 0.19] (p = 0.0017), block 20 [0.4, 0.5, 0.6] (t = 8.66, p = 0.013): 2 wins
    # B - C: block 10 exactly 0.1 each seed (no spread: a win), block 20 [0.5, 0.4, 0.55] (t = 10.96, p = 0.008)
    matrix = penalty_matrix(rows(table))
    assert matrix.loc[["A", "B", "C"], ["A", "B", "C"]].values.tolist() == [[0, 1, 2], [0, 0, 2], [0, 0, 0]]


def test_the_class_histogram_of_the_picks_by_hand(tmp_path):
    spec = tiny_spec("random").model_dump_json()
    labels = np.array([0, 1, 1, 1, 1, 1, 2])
    path = labels_file(tmp_path, dataset_key_of(spec))
    path.parent.mkdir(parents=True)
    np.save(path, labels)
    frame = pd.DataFrame(
        [
            # seed 0 picks images 0, 1, 2 (classes 0, 1, 1); seed 1 picks 3, 4, 5 (classes 1, 1, 1)
            {"dataset": "digits", "regime": "r", "strategy": "s", "seed": 0, "round": 0, "selected": [0, 1, 2]},
            {"dataset": "digits", "regime": "r", "strategy": "s", "seed": 1, "round": 0, "selected": [3, 4, 5]},
            {"dataset": "digits", "regime": "r", "strategy": "s", "seed": 0, "round": 1, "selected": []},
        ]
    ).assign(spec=spec)
    tidy, absent = pick_counts(frame, tmp_path)
    assert absent == []
    assert tidy.set_index("class")["count"].to_dict() == {0: 0.5, 1: 2.5, 2: 0.0}, "means over the 2 seeds"
    # shares 1/6, 5/6, 0: entropy 0.4506 over log 3 = 0.4101
    assert balance(np.array([[0.5, 2.5, 0.0]]))[0] == pytest.approx(0.4101, abs=1e-4)
    assert balance(np.array([[2.0, 2.0, 2.0]]))[0] == pytest.approx(1.0)
    assert pick_counts(frame, tmp_path / "elsewhere")[1] == ["digits"], "labels absent: named, not guessed"
