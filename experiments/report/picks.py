"""What each strategy labeled: the class histogram of its picks by round (ALScope's class balance).

A round's picks are the pool indices of its `selected` column (labeled after that round's query); their classes
come from the train-pool labels the runners store beside the results (`experiments.results.labels_file`), so the
report still reads no dataset. Counts are means over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.data import GROUP, ReportData
from experiments.report.tables import Table, strategy_order
from experiments.results import labels_file
from experiments.specs import DatasetSpec


def dataset_key_of(spec_json: str) -> str:
    """The dataset's key (its spec as JSON, as the runners key it) from a row's `spec` column."""
    return DatasetSpec.model_validate(json.loads(spec_json)["dataset"]).model_dump_json()


def pick_counts(rounds: pd.DataFrame, results: Path) -> tuple[pd.DataFrame, list[str]]:
    """Tidy (dataset, regime, strategy, round, class, count): mean picks per class over seeds; and the datasets
    whose labels are not stored (an older results folder: `albench run` on it stores them)."""
    picked = rounds[rounds["selected"].map(len) > 0]
    keys = {spec: dataset_key_of(spec) for spec in picked["spec"].unique()}  # one parse per trial, not per row
    labels_of: dict[str, np.ndarray | None] = {}
    for key in set(keys.values()):  # one file per dataset
        path = labels_file(results, key)
        labels_of[key] = np.load(path) if path.exists() else None
    absent = sorted({json.loads(key)["name"] for key, labels in labels_of.items() if labels is None})
    frames = []
    for key, part in picked.groupby(picked["spec"].map(keys), sort=False):
        labels = labels_of[key]
        if labels is None:
            continue
        n_classes = int(labels.max()) + 1
        counts = np.stack(
            [np.bincount(labels[np.asarray(s, dtype=np.int64)], minlength=n_classes) for s in part["selected"]]
        )
        ids = part[[*GROUP, "strategy", "seed", "round"]].loc[part.index.repeat(n_classes)].reset_index(drop=True)
        frames.append(ids.assign(**{"class": np.tile(np.arange(n_classes), len(part)), "count": counts.ravel()}))
    columns = [*GROUP, "strategy", "seed", "round", "class", "count"]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    tidy = frame.groupby([*GROUP, "strategy", "round", "class"], as_index=False)["count"].mean()
    return tidy, absent


def balance(counts: np.ndarray) -> np.ndarray:
    """Per row of class counts: the entropy of the class shares over log(classes), 1 = every class alike,
    0 = one class only."""
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(shares > 0, shares * np.log(shares), 0.0), axis=1)
    return entropy / np.log(counts.shape[1])


def class_balance_table(data: ReportData, results: Path) -> Table:
    """Per strategy and round: the picks' mean count per class, and their balance."""
    tidy, absent = pick_counts(data.rounds, results)
    notes = [f"labels not stored for {', '.join(absent)}: run `albench run` on the grid once more"] if absent else []
    title = "Class histogram of the picks by round (mean count per class over seeds)"
    if tidy.empty:
        return Table("class_balance", title, pd.DataFrame(), tidy, notes=notes or ["no picks"])
    wide = tidy.pivot_table(index=[*GROUP, "strategy", "round"], columns="class", values="count").reset_index()
    classes = [c for c in wide.columns if isinstance(c, int | np.integer)]
    counts = wide[classes].to_numpy()
    wide["balance"] = balance(counts)
    order = {s: i for i, s in enumerate(strategy_order(wide["strategy"]))}
    wide = wide.sort_values([*GROUP, "strategy", "round"], key=lambda c: c.map(order) if c.name == "strategy" else c)
    display = wide.copy()
    for c in classes:
        display[c] = display[c].map(lambda v: f"{v:.1f}")
    display["balance"] = display["balance"].map(lambda v: f"{v:.2f}")
    display.columns = [str(c) for c in display.columns]
    return Table("class_balance", title, display.set_index([*GROUP, "strategy", "round"]), tidy, notes=notes)
