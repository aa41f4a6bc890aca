"""The compact mean ± std accuracy table printed at the end of a run and by `albench table` (the full,
formatted tables are `albench report`'s)."""

from __future__ import annotations

import pandas as pd

from experiments.report.tables import mean_std


def accuracy_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Rows: (dataset, regime, strategy); columns: labeled counts; cells 'mean ± std' in % over seeds.

    A cell of a single seed shows its mean alone: its standard deviation is undefined, not zero.
    """
    grouped = rounds.groupby(["dataset", "regime", "strategy", "n_labeled"])["test_accuracy"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [mean_std(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["count"], strict=True)]
    table = stats.pivot(index=["dataset", "regime", "strategy"], columns="n_labeled", values="cell")
    table.columns = [str(c) for c in table.columns]
    return table.fillna("")


def format_accuracy_tables(rounds: pd.DataFrame) -> str:
    """One text table per (dataset, regime), strategies sorted by their mean accuracy at the largest count."""
    if rounds.empty:
        return "no completed rounds yet"
    blocks = []
    for (dataset, regime), part in rounds.groupby(["dataset", "regime"]):
        table = accuracy_table(part).droplevel([0, 1])
        last = part["n_labeled"].max()
        order = part[part["n_labeled"] == last].groupby("strategy")["test_accuracy"].mean().sort_values(ascending=False)
        table = table.reindex(list(order.index) + [s for s in table.index if s not in order.index])
        seeds = part.groupby("strategy")["seed"].nunique()
        n_seeds = str(seeds.min()) if seeds.min() == seeds.max() else f"{seeds.min()} to {seeds.max()}"
        plural = "" if seeds.max() == 1 else "s"
        header = (
            f"{dataset} / {regime}: test accuracy %, mean ± std over {n_seeds} seed{plural}; columns: labeled images"
        )
        blocks.append(header + "\n" + table.to_string())
    return "\n\n".join(blocks)
