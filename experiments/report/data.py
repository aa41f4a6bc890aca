"""What a report reads: the Parquet rows of a results folder, per-trial summaries, and what is still missing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.errors import AlbenchError
from experiments.results import read_rounds

GROUP = ["dataset", "regime"]


@dataclass
class ReportData:
    rounds: pd.DataFrame  # one row per (trial, round)
    trials: pd.DataFrame  # one row per trial: totals, AULC, completeness
    planned_seeds: dict[tuple[str, str], int]  # (dataset, regime) -> seeds the grid planned
    missing: list[str]  # human-readable lines on unfinished or absent trials


def aulc(n_labeled: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under the learning curve normalised to [0, 1]: trapezoids over labeled counts / the count range."""
    order = np.argsort(n_labeled)
    x, y = np.asarray(n_labeled, float)[order], np.asarray(accuracy, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean()) if len(y) else float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def _ledger(results: Path) -> list[dict]:
    folder = results / "trials"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load(results: str | Path) -> ReportData:
    """Reads a results folder (finished or still running); a folder without rows is a clear error."""
    results = Path(results)
    rounds = read_rounds(results)
    if rounds.empty:
        raise AlbenchError(
            f"no results in {results}: expected Parquet files under {results / 'rounds'}; run a grid first"
        )
    keys = ["trial_id", "experiment", *GROUP, "strategy", "seed", "n_rounds", "budget", "device"]
    trials = rounds.groupby(keys, as_index=False).agg(
        rounds_done=("round", "count"), train_seconds=("train_seconds", "sum"), query_seconds=("query_seconds", "sum")
    )
    areas = rounds.groupby("trial_id").apply(lambda t: aulc(t["n_labeled"].to_numpy(), t["test_accuracy"].to_numpy()))
    trials["aulc"] = trials["trial_id"].map(areas)
    trials["complete"] = trials["rounds_done"] >= trials["n_rounds"]
    seeds = {k: set(v) for k, v in trials.groupby(GROUP)["seed"].unique().items()}
    missing = [
        f"{r.dataset}/{r.regime}/{r.strategy}/seed{r.seed}: {r.rounds_done} of {r.n_rounds} rounds"
        for r in trials[~trials["complete"]].itertuples()
    ]
    have = set(trials["trial_id"])
    for entry in _ledger(results):  # the driver's ledger also knows the planned trials that have no row yet
        dataset, regime = entry["label"].split("/")[:2]
        seeds.setdefault((dataset, regime), set()).add(int(entry["label"].rsplit("seed", 1)[1]))
        if entry["trial_id"] not in have:
            missing.append(f"{entry['label']}: no rounds yet ({entry['status']})")
    return ReportData(rounds, trials, {k: len(v) for k, v in seeds.items()}, missing)


def summary_metrics(data: ReportData, experiment: str) -> dict[str, float]:
    """A grid's summary for its MLflow parent run: each strategy's mean AULC per dataset/regime over its finished
    trials ('aulc/<dataset>/<regime>/<strategy>'), with the finished-trial count beside it."""
    done = data.trials[(data.trials["experiment"] == experiment) & data.trials["complete"]]
    metrics: dict[str, float] = {}
    for (dataset, regime, strategy), part in done.groupby([*GROUP, "strategy"]):
        metrics[f"aulc/{dataset}/{regime}/{strategy}"] = float(part["aulc"].mean())
        metrics[f"trials_done/{dataset}/{regime}/{strategy}"] = float(len(part))
    return metrics
