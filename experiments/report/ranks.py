"""Strategies compared over many settings at once, as the newer AL benchmarks do.

- **Critical difference** (CDALBench; Demšar, JMLR 2006): per block (dataset × regime × labeled count) the
  strategies are ranked by their mean test accuracy over seeds (1 = best, ties share the average rank). The
  Friedman test asks whether the mean ranks differ at all; the Nemenyi post-hoc test calls two strategies
  different when their mean ranks differ by more than CD = q_α · sqrt(k (k + 1) / (6 N)), k strategies,
  N blocks, q_α the studentized range quantile at α = 0.05 over √2.
- **Pairwise penalty matrix** (Lüth et al., NeurIPS 2023): for each ordered pair (A, B), the number of labeled
  counts at which A beats B by a two-sided paired t-test over seeds at α = 0.05 (paired by seed, A's mean
  higher). Row sums say how often a strategy wins; column sums how often it loses.

Only blocks where every compared strategy has results enter; a strategy missing from some blocks is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.report.data import GROUP, ReportData
from experiments.report.tables import Table, strategy_order

ALPHA = 0.05
BLOCK = [*GROUP, "n_labeled"]


def block_means(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy over seeds: rows = blocks (dataset, regime, n_labeled), columns = strategies."""
    means = rounds.groupby([*BLOCK, "strategy"])["test_accuracy"].mean().unstack("strategy")
    return means[strategy_order(means.columns)]


@dataclass(frozen=True)
class CriticalDifference:
    mean_ranks: pd.Series  # strategy -> mean rank (1 = best), ascending
    n_blocks: int
    friedman_statistic: float
    friedman_p: float
    cd: float  # the Nemenyi critical difference at ALPHA
    dropped: list[str]  # strategies missing from some blocks (left out)

    def groups(self) -> list[list[str]]:
        """Maximal runs of strategies (in rank order) whose mean ranks lie within CD of each other."""
        names, ranks = list(self.mean_ranks.index), self.mean_ranks.to_numpy()
        runs = []
        for i in range(len(names)):
            j = i
            while j + 1 < len(names) and ranks[j + 1] - ranks[i] <= self.cd:
                j += 1
            if j > i and not any(a <= i and j <= b for a, b in runs):
                runs.append((i, j))
        return [names[a : b + 1] for a, b in runs]


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """q_α of the Nemenyi test for k strategies: the studentized range quantile (infinite df) over √2."""
    from scipy.stats import studentized_range

    return float(studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def critical_difference(rounds: pd.DataFrame) -> CriticalDifference | None:
    """Friedman + Nemenyi over every block; None with fewer than 2 strategies or 2 complete blocks."""
    from scipy.stats import friedmanchisquare

    means = block_means(rounds)
    dropped = [s for s in means.columns if means[s].isna().any() and means[s].notna().any()]
    complete = means.drop(columns=dropped).dropna()
    k, n = complete.shape[1], complete.shape[0]
    if k < 2 or n < 2:
        return None
    ranks = complete.rank(axis=1, ascending=False, method="average")
    mean_ranks = ranks.mean().sort_values()
    if k >= 3:
        statistic, p = friedmanchisquare(*[complete[s].to_numpy() for s in complete.columns])
    else:  # Friedman needs 3; for 2 strategies the same statistic from its formula, chi-square with 1 df
        from scipy.stats import chi2

        statistic = 12 * n / (k * (k + 1)) * (np.sum(ranks.mean().to_numpy() ** 2) - k * (k + 1) ** 2 / 4)
        p = float(chi2.sf(statistic, k - 1))
    cd = nemenyi_q(k) * np.sqrt(k * (k + 1) / (6 * n))
    return CriticalDifference(mean_ranks, n, float(statistic), float(p), float(cd), dropped)


def critical_difference_table(data: ReportData) -> Table:
    result = critical_difference(data.rounds)
    title = "Mean rank over dataset × regime × labeled count (Friedman + Nemenyi, α = 0.05)"
    if result is None:
        empty = pd.DataFrame()
        return Table("critical_difference", title, empty, empty, notes=["needs 2 strategies over 2 blocks"])
    frame = pd.DataFrame({"strategy": result.mean_ranks.index, "mean_rank": result.mean_ranks.to_numpy()})
    display = frame.assign(mean_rank=frame["mean_rank"].map(lambda r: f"{r:.2f}")).set_index("strategy")
    groups = "; ".join("{" + ", ".join(g) + "}" for g in result.groups()) or "none"
    notes = [
        f"{result.n_blocks} blocks; Friedman chi2 = {result.friedman_statistic:.2f}, p = {result.friedman_p:.3g}; "
        f"Nemenyi CD = {result.cd:.2f} (q = {nemenyi_q(len(frame)):.3f})",
        f"not different from each other (within CD): {groups}",
    ]
    if result.dropped:
        notes.append(f"left out (missing from some blocks): {', '.join(result.dropped)}")
    return Table("critical_difference", title, display, frame, notes=notes)


def penalty_matrix(rounds: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """P[A, B] = labeled counts (blocks) at which A beats B: paired t-test over seeds, p < alpha, A's mean higher."""
    from scipy.stats import ttest_rel

    names = strategy_order(rounds["strategy"].unique())
    matrix = pd.DataFrame(0, index=names, columns=names)
    for _, part in rounds.groupby(BLOCK):
        by_seed = part.pivot_table(index="seed", columns="strategy", values="test_accuracy")
        for a in by_seed.columns:
            for b in by_seed.columns:
                if a == b:
                    continue
                pair = by_seed[[a, b]].dropna()
                if len(pair) < 2:
                    continue
                diff = pair[a] - pair[b]
                if diff.mean() <= 0:
                    continue
                p = 0.0 if np.allclose(diff, diff.iloc[0]) else float(ttest_rel(pair[a], pair[b]).pvalue)
                matrix.loc[a, b] += int(p < alpha)
    return matrix


def penalty_table(data: ReportData) -> Table:
    matrix = penalty_matrix(data.rounds)
    display = matrix.astype(str)
    display["wins"] = matrix.sum(axis=1).astype(str)
    display.loc["losses"] = [*matrix.sum(axis=0).astype(str), ""]
    tidy = matrix.stack().rename("wins").reset_index()
    tidy.columns = ["strategy", "against", "wins"]
    return Table(
        "penalty",
        "Pairwise penalty matrix: labeled counts at which the row beats the column (paired t-test, α = 0.05)",
        display,
        tidy,
        notes=[f"{data.rounds.groupby(BLOCK).ngroups} labeled counts over every dataset/regime; seeds pair trials"],
    )
