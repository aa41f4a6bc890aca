"""How well each round's model fits its labeled set: train accuracy by labeled count, and where it is underfit.

An active-learning comparison between models that have not fit their labeled sets says little about the
query strategies: the report names every (strategy, labeled count) whose mean train accuracy falls below the
threshold.
"""

from __future__ import annotations

import pandas as pd

from experiments.report.data import GROUP, ReportData
from experiments.report.tables import Table, _grid_table

UNDERFIT_BELOW = 0.9  # mean accuracy on the labeled set after a round's training


def train_accuracy_table(data: ReportData, threshold: float = UNDERFIT_BELOW) -> Table:
    """Train accuracy (%) by labeled images, mean ± std over seeds; the notes name the underfit cells."""
    title = "Train accuracy (%) on the labeled set after each round's training, mean ± std over seeds"
    rows = data.rounds.dropna(subset=["train_accuracy"])
    if rows.empty:
        empty = pd.DataFrame()
        return Table("train_accuracy", title, empty, empty, notes=["no round of these results recorded it"])
    stats = rows.groupby([*GROUP, "n_labeled", "strategy"])["train_accuracy"].agg(["mean", "std", "count"])
    stats = stats.reset_index().rename(columns={"count": "n"}).sort_values([*GROUP, "n_labeled"])
    stats["planned"] = stats["n"]
    stats["column"] = [f"{d}/{r} @{n}" for d, r, n in zip(stats.dataset, stats.regime, stats.n_labeled, strict=True)]
    table = _grid_table(stats, "column", "train_accuracy", title, None)
    table.data = stats.drop(columns=["column", "planned"])
    table.notes = underfit(stats, threshold)
    return table


def underfit(stats: pd.DataFrame, threshold: float) -> list[str]:
    """One line per (dataset/regime, strategy) with the labeled counts whose mean train accuracy is below it."""
    low = stats[stats["mean"] < threshold]
    if low.empty:
        return [f"every round trained to at least {threshold:.0%} train accuracy (mean over seeds)"]
    lines = [
        f"UNDERFIT: {len(low)} of {len(stats)} (strategy, labeled count) cells train below {threshold:.0%}: "
        "an active-learning comparison on underfit models is not meaningful (train longer: train.epochs)"
    ]
    for (dataset, regime, strategy), part in low.groupby([*GROUP, "strategy"]):
        cells = ", ".join(f"{n} ({100 * m:.1f} %)" for n, m in zip(part["n_labeled"], part["mean"], strict=True))
        lines.append(f"{dataset}/{regime} {strategy}: at {cells}")
    return lines
