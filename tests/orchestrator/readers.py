"""What the orchestrator tests compare: the deterministic Parquet records and the MLflow runs of a results folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.results import read_rounds
from orchestrator.store.tracking import Tracker, default_tracking_uri


def records(results: Path) -> pd.DataFrame:
    """Every round's deterministic fields (no timings), sorted by (trial_id, round)."""
    frame = read_rounds(results)[["trial_id", "round", "n_labeled", "test_accuracy", "train_loss", "selected"]]
    frame = frame.sort_values(["trial_id", "round"]).reset_index(drop=True)
    frame["selected"] = frame["selected"].map(list)
    return frame


def mlflow_runs(results: Path, experiment: str, tracking_uri: str | None = None) -> dict[str, tuple[str, list[int]]]:
    """trial_id -> (run status, steps of its test_accuracy points) for every trial's run of the experiment."""
    tracker = Tracker(tracking_uri or default_tracking_uri(results), experiment, results)
    history = tracker.client.get_metric_history
    return {
        run.data.tags["trial_id"]: (run.info.status, [m.step for m in history(run.info.run_id, "test_accuracy")])
        for run in trial_runs(tracker)
    }


def trial_runs(tracker: Tracker) -> list:
    """The experiment's runs of trials (not the grid's parent run)."""
    return [r for r in tracker.client.search_runs([tracker.experiment_id]) if "trial_id" in r.data.tags]


def parent_runs(tracker: Tracker) -> list:
    return [r for r in tracker.client.search_runs([tracker.experiment_id]) if "trial_id" not in r.data.tags]
