"""Strategies against each other, paired by seed: against a baseline, and side by side with the paper's ranking.

Seeds pair trials: the strategies of one seed share their initial labeled set and initial weights, so the
difference of two strategies' AULC within a seed removes what the seed alone decides. A difference is called
beyond the seeds' spread when its mean exceeds the standard deviation of the paired differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.report.data import GROUP, ReportData
from experiments.report.paper import TABLE_III
from experiments.report.tables import Table, mean_std, strategy_order


def paired_differences(part: pd.DataFrame, strategy: str, baseline: str, value: str = "aulc") -> np.ndarray:
    """`strategy` minus `baseline`, one difference per seed both have (rows of one dataset/regime)."""
    own = part[part["strategy"] == strategy].set_index("seed")[value]
    base = part[part["strategy"] == baseline].set_index("seed")[value]
    seeds = sorted(set(own.index) & set(base.index))
    return own[seeds].to_numpy() - base[seeds].to_numpy()


def beyond_spread(diff: np.ndarray) -> bool | None:
    """Whether the mean paired difference exceeds one standard deviation of the differences (None: < 2 seeds)."""
    return None if len(diff) < 2 else bool(abs(diff.mean()) > diff.std(ddof=1))


def paired_table(data: ReportData, baseline: str = "random") -> Table:
    """Each strategy against `baseline` over the same seeds (AULC): win/tie/loss, mean difference, paired t-test."""
    from scipy.stats import ttest_1samp

    records = []
    for (dataset, regime), part in data.trials.groupby(GROUP):
        for strategy in strategy_order(part["strategy"]):
            if strategy == baseline:
                continue
            diff = paired_differences(part, strategy, baseline)
            p = float(ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 and np.std(diff) > 0 else float("nan")
            records.append(
                {
                    "dataset": dataset,
                    "regime": regime,
                    "strategy": strategy,
                    "seeds": len(diff),
                    "wins": int((diff > 1e-12).sum()),
                    "ties": int((abs(diff) <= 1e-12).sum()),
                    "losses": int((diff < -1e-12).sum()),
                    "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
                    "std_diff": float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
                    "p_value": p,
                }
            )
    frame = pd.DataFrame(records)
    if frame.empty:
        return Table(
            "paired", f"Paired comparison with {baseline}", frame, frame, notes=[f"no '{baseline}' trials to pair with"]
        )
    display = pd.DataFrame(
        {
            "dataset/regime": frame["dataset"] + "/" + frame["regime"],
            "strategy": frame["strategy"],
            "win/tie/loss": [f"{w}/{t}/{l}" for w, t, l in zip(frame.wins, frame.ties, frame.losses, strict=True)],
            "AULC difference": [
                mean_std(m, s, n, 1.0, 3) for m, s, n in zip(frame.mean_diff, frame.std_diff, frame.seeds, strict=True)
            ],
            "paired t-test p": ["n/a" if pd.isna(p) else f"{p:.3f}" for p in frame.p_value],
        }
    ).set_index(["dataset/regime", "strategy"])
    notes = [
        "pairs are seeds of the same grid (same initial set and weights); with few seeds a paired test has little power"
    ]
    return Table("paired", f"Each strategy against {baseline}, paired by seed (AULC)", display, frame, notes=notes)


def paper_ranks(dataset: str) -> dict[str, int]:
    """The paper's Table III ranking of its six strategies on `dataset`, by mean accuracy over its labeled counts."""
    cells = {(s, n): m for (d, n, s), (m, _) in TABLE_III.items() if d == dataset}
    means = {s: np.mean([m for (t, _), m in cells.items() if t == s]) for s, _ in cells}
    order = sorted(means, key=means.get, reverse=True)
    return {s: i + 1 for i, s in enumerate(order)}


def _delta(diff: np.ndarray) -> tuple[str, str]:
    """('+1.2 ± 0.8', 'yes'): a paired difference in AULC points and whether it is beyond the seeds' spread."""
    if len(diff) == 0:
        return "", ""
    spread = beyond_spread(diff)
    text = mean_std(diff.mean(), diff.std(ddof=1) if len(diff) > 1 else np.nan, len(diff))
    return ("+" if diff.mean() > 0 else "") + text, "n/a" if spread is None else "yes" if spread else "no"


def side_by_side_table(data: ReportData, ablation: str = "ent_gradnorm") -> Table:
    """Per dataset/regime: each strategy's rank by mean AULC, its paired AULC difference against random and
    against `ablation` (the same query without the loss-prediction module), and the paper's Table III rank."""
    records = []
    for (dataset, regime), part in data.trials.groupby(GROUP):
        means = part.groupby("strategy")["aulc"].mean().sort_values(ascending=False)
        paper = paper_ranks(dataset)
        for rank, (strategy, aulc) in enumerate(means.items(), 1):
            own = part[part["strategy"] == strategy]["aulc"]
            record = {
                "dataset/regime": f"{dataset}/{regime}",
                "strategy": strategy,
                "rank": rank,
                "AULC %": mean_std(aulc, own.std(), len(own)),
            }
            for baseline in ("random", ablation):
                diff = paired_differences(part, strategy, baseline) if strategy != baseline else np.zeros(0)
                record[f"vs {baseline} (AULC)"], record[f"beyond spread ({baseline})"] = _delta(diff)
            record["paper rank"] = str(paper[strategy]) if strategy in paper else ""
            records.append(record)
    frame = pd.DataFrame(records)
    title = "Side by side: our ranking by AULC, paired differences, and the paper's Table III ranking"
    if frame.empty:
        return Table("side_by_side", title, frame, frame)
    notes = [
        "differences are paired by seed, mean ± std over seeds; 'beyond spread': |mean| > the std of the differences",
        "paper rank: the paper's six strategies ranked by mean accuracy over its Table III counts for this dataset "
        "(its high-budget regime); a ranking, not numbers, is what a smaller regime can be compared with",
    ]
    return Table("side_by_side", title, frame.set_index(["dataset/regime", "strategy"]), frame, notes=notes)
