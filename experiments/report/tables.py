"""The report's tables, each as tidy numbers (CSV) plus display strings with the best cells marked.

Accuracy and AULC are shown in the paper's form, mean ± std over seeds (sample std, ddof 1; a single seed
shows its mean alone) with the number of seeds in brackets where it falls short of the grid's plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments.errors import AlbenchError
from experiments.report.data import GROUP, ReportData
from experiments.report.paper import HIGH_BUDGET, TABLE_III, is_high_budget

PAPER_ORDER = ["learning_loss", "entropy", "ent_gradnorm", "coreset", "random", "lplgrad"]


@dataclass
class Table:
    name: str  # file stem
    title: str
    display: pd.DataFrame  # strings, as shown
    data: pd.DataFrame  # tidy numbers, as written to CSV
    best: pd.DataFrame | None = None  # True where a cell is its column's best
    notes: list[str] = field(default_factory=list)


def strategy_order(names) -> list[str]:
    """The paper's order first, then the rest alphabetically: every table and figure lists strategies alike."""
    names = set(names)
    return [s for s in PAPER_ORDER if s in names] + sorted(names - set(PAPER_ORDER))


def mean_std(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 1) -> str:
    if n < 2 or pd.isna(std):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _grid_table(cells: pd.DataFrame, column: str, name: str, title: str, planned, scale=100.0, digits=1) -> Table:
    """cells: strategy, `column`, mean, std, n, planned -> strategies x columns, best mean per column marked."""
    columns = list(dict.fromkeys(cells[column]))
    rows = strategy_order(cells["strategy"])
    display = pd.DataFrame("", index=rows, columns=columns)
    best = pd.DataFrame(False, index=rows, columns=columns)
    notes = []
    for col, part in cells.groupby(column, sort=False):
        top = part["mean"].max()
        for r in part.itertuples():
            text = mean_std(r.mean, r.std, r.n, scale, digits)
            if r.n < r.planned:
                text += f" ({r.n}/{r.planned})"
                notes.append(f"{r.strategy} at {col}: {r.n} of {r.planned} planned seeds")
            display.loc[r.strategy, col] = text
            best.loc[r.strategy, col] = bool(np.isclose(r.mean, top))
    display.index.name = best.index.name = "strategy"
    return Table(name, title, display, cells.drop(columns=[column]).assign(column=cells[column]), best, notes)


def accuracy_table(data: ReportData, at: list[int] | None = None) -> Table:
    """Paper Table III: strategies x (dataset, regime, labeled count), test accuracy % mean ± std over seeds."""
    rows = data.rounds if not at else data.rounds[data.rounds["n_labeled"].isin(at)]
    if rows.empty:
        available = ", ".join(str(n) for n in sorted(data.rounds["n_labeled"].unique()))
        raise AlbenchError(f"--at {','.join(map(str, at))}: no results at those labeled counts; available: {available}")
    stats = rows.groupby([*GROUP, "n_labeled", "strategy"])["test_accuracy"].agg(["mean", "std", "count"]).reset_index()
    stats = stats.rename(columns={"count": "n"}).sort_values([*GROUP, "n_labeled"])
    stats["planned"] = [
        data.planned_seeds.get((d, r), n) for d, r, n in zip(stats.dataset, stats.regime, stats.n, strict=True)
    ]
    stats["column"] = [f"{d}/{r} @{n}" for d, r, n in zip(stats.dataset, stats.regime, stats.n_labeled, strict=True)]
    table = _grid_table(stats, "column", "accuracy", "Test accuracy (%) by labeled images, mean ± std over seeds", None)
    table.data = stats.drop(columns=["column"])
    return table


def aulc_table(data: ReportData) -> Table:
    """Area under each trial's learning curve (normalised to [0, 1]), mean ± std over seeds."""
    stats = data.trials.groupby([*GROUP, "strategy"])["aulc"].agg(["mean", "std", "count"]).reset_index()
    stats = stats.rename(columns={"count": "n"})
    stats["planned"] = [
        data.planned_seeds.get((d, r), n) for d, r, n in zip(stats.dataset, stats.regime, stats.n, strict=True)
    ]
    stats["column"] = stats["dataset"] + "/" + stats["regime"]
    table = _grid_table(stats, "column", "aulc", "Area under the learning curve (normalised to [0, 1])", None, 1.0, 3)
    table.data = stats.drop(columns=["column"])
    return table


def rank_table(data: ReportData) -> Table:
    """Each strategy's rank by mean AULC within every (dataset, regime) (1 = best, ties averaged), and the average."""
    means = data.trials.groupby([*GROUP, "strategy"])["aulc"].mean().reset_index()
    means["column"] = means["dataset"] + "/" + means["regime"]
    means["rank"] = means.groupby("column")["aulc"].rank(ascending=False, method="average")
    ranks = means.pivot(index="strategy", columns="column", values="rank")
    ranks["average rank"] = ranks.mean(axis=1)
    ranks = ranks.sort_values("average rank")
    display = ranks.map(lambda v: "" if pd.isna(v) else f"{v:.2f}".rstrip("0").rstrip("."))
    best = ranks.eq(ranks.min(axis=0), axis=1)
    return Table("ranks", "Average rank by AULC across datasets (1 = best)", display, ranks.reset_index(), best)


def cost_table(data: ReportData) -> Table:
    """Paper Table IV: training and query seconds per trial, mean ± std, per strategy and dataset; with the hardware."""
    stats = (
        data.trials[data.trials["complete"]]
        .groupby(["dataset", "strategy"])
        .agg(
            train_mean=("train_seconds", "mean"),
            train_std=("train_seconds", "std"),
            query_mean=("query_seconds", "mean"),
            query_std=("query_seconds", "std"),
            n=("trial_id", "count"),
        )
        .reset_index()
    )
    rows = strategy_order(stats["strategy"])
    columns = [f"{d} {kind}" for d in dict.fromkeys(stats["dataset"]) for kind in ("train s", "query s")]
    display = pd.DataFrame("", index=rows, columns=columns)
    for r in stats.itertuples():
        display.loc[r.strategy, f"{r.dataset} train s"] = mean_std(r.train_mean, r.train_std, r.n, 1.0, 1)
        display.loc[r.strategy, f"{r.dataset} query s"] = mean_std(r.query_mean, r.query_std, r.n, 1.0, 1)
    display.index.name = "strategy"
    hardware = data.trials.groupby("dataset")["device"].unique()
    notes = [f"{d}: measured on {', '.join(sorted(map(str, devices)))}" for d, devices in hardware.items()]
    notes.append(
        "complete trials only; seconds summed over a trial's rounds; a round 0 trained once for its round-0 group "
        "(the rows' round0_group) counts in every member, as if each had trained it"
    )
    return Table("cost", "Cost per trial: training and query seconds, mean ± std", display, stats, notes=notes)


def ablation_table(data: ReportData, with_module: str = "lplgrad", without: str = "ent_gradnorm") -> Table:
    """Paper Tables V/VI: the auxiliary module's effect at 1/3, 1/2 and all of the budget, paired by seed."""
    records = []
    for (dataset, regime), part in data.rounds.groupby(GROUP):
        if not {with_module, without} <= set(part["strategy"]):
            continue
        budget, counts = int(part["budget"].iloc[0]), sorted(part["n_labeled"].unique())
        for label, fraction in (("1/3", 1 / 3), ("1/2", 1 / 2), ("all", 1.0)):
            eligible = [n for n in counts if n <= fraction * budget + 1e-9]
            if not eligible:
                continue
            at = part[part["n_labeled"] == eligible[-1]]
            a = at[at["strategy"] == with_module].set_index("seed")["test_accuracy"]
            b = at[at["strategy"] == without].set_index("seed")["test_accuracy"]
            seeds = sorted(set(a.index) & set(b.index))
            diff = a[seeds].to_numpy() - b[seeds].to_numpy()
            records.append(
                {
                    "dataset": dataset,
                    "regime": regime,
                    "fraction": label,
                    "n_labeled": eligible[-1],
                    "with_mean": a.mean(),
                    "with_std": a.std(),
                    "with_n": len(a),
                    "without_mean": b.mean(),
                    "without_std": b.std(),
                    "without_n": len(b),
                    "diff_mean": diff.mean() if len(diff) else np.nan,
                    "diff_std": diff.std(ddof=1) if len(diff) > 1 else np.nan,
                    "pairs": len(seeds),
                }
            )
    frame = pd.DataFrame(records)
    if frame.empty:
        return Table("ablation", "Ablation", frame, frame, notes=[f"needs both {with_module} and {without} trials"])
    display = pd.DataFrame(
        {
            "dataset/regime": frame["dataset"] + "/" + frame["regime"],
            "budget": frame["fraction"],
            "labeled": frame["n_labeled"].astype(str),
            with_module: [
                mean_std(m, s, n) for m, s, n in zip(frame.with_mean, frame.with_std, frame.with_n, strict=True)
            ],
            without: [
                mean_std(m, s, n)
                for m, s, n in zip(frame.without_mean, frame.without_std, frame.without_n, strict=True)
            ],
            "difference (paired)": [
                mean_std(m, s, n) for m, s, n in zip(frame.diff_mean, frame.diff_std, frame.pairs, strict=True)
            ],
        }
    ).set_index(["dataset/regime", "budget"])
    title = f"Ablation: {with_module} against the same trials without the auxiliary module ({without}), accuracy %"
    return Table("ablation", title, display, frame)


def paper_table(data: ReportData) -> Table:
    """Our numbers beside the paper's Table III, where the dataset, the high-budget regime and the count match."""
    rows = data.rounds
    matched = rows[
        [
            is_high_budget(d, q, s, b)
            for d, q, s, b in zip(rows.dataset, rows["query"], rows.subset, rows.budget, strict=True)
        ]
    ]
    stats = (
        matched.groupby(["dataset", "n_labeled", "strategy"])["test_accuracy"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    records = []
    for r in stats.itertuples():
        paper = TABLE_III.get((r.dataset, int(r.n_labeled), r.strategy))
        if paper is not None:
            records.append(
                {
                    "dataset": r.dataset,
                    "n_labeled": int(r.n_labeled),
                    "strategy": r.strategy,
                    "ours_mean": 100 * r.mean,
                    "ours_std": 100 * r.std,
                    "ours_seeds": r.count,
                    "paper_mean": paper[0],
                    "paper_std": paper[1],
                    "difference": 100 * r.mean - paper[0],
                }
            )
    frame = pd.DataFrame(records)
    settings = "; ".join(f"{d}: b={b}, S={s}, B={bb}" for d, (b, s, bb) in HIGH_BUDGET.items())
    if frame.empty:
        note = f"none of these results is in a setting of the paper's Table III (high budget: {settings})"
        return Table("paper", "Beside the paper (Table III)", frame, frame, notes=[note])
    display = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            "labeled": frame["n_labeled"].astype(str),
            "strategy": frame["strategy"],
            "ours": [
                mean_std(m / 100, s / 100, n)
                for m, s, n in zip(frame.ours_mean, frame.ours_std, frame.ours_seeds, strict=True)
            ],
            "paper": [f"{m:.1f} ± {s:.1f}" for m, s in zip(frame.paper_mean, frame.paper_std, strict=True)],
            "ours − paper": [f"{d:+.1f}" for d in frame["difference"]],
        }
    ).set_index(["dataset", "labeled", "strategy"])
    return Table("paper", "Beside the paper's Table III (high budget, accuracy %)", display, frame)
