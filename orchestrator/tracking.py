"""MLflow: one experiment per grid, one run per trial, one point per (trial, round, metric). Driver-side only.

Runs are found by their `trial_id` tag before one is created, and only rounds whose step (n_labeled) is not
yet in a run's history are logged, so catching up after any crash never duplicates a run or a point.
Only `orchestrator.bookkeeper` uses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from experiments.records import GPU_FIELDS, RoundRecord
from experiments.specs import TrialSpec
from strategies import validate_settings

ROUND_METRICS = (
    "test_accuracy",
    "train_accuracy",
    "train_loss",
    "train_seconds",
    "eval_seconds",
    "query_seconds",
) + GPU_FIELDS


def default_tracking_uri(results: Path) -> str:
    """An embedded SQLite store inside the results folder."""
    return f"sqlite:///{(Path(results) / 'mlflow.db').resolve()}"


def flatten(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    """Nested spec -> {'train.lr': '0.1', ...}: MLflow params are flat strings."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


class Tracker:
    """A thin layer over MlflowClient with the idempotent operations the sinks need."""

    def __init__(self, tracking_uri: str, experiment: str, results: Path) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # after the import, which configures it

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._logged: dict[str, set[int]] = {}  # run id -> steps already logged
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            artifacts = (Path(results) / "mlflow-artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)

    def run_for(self, spec: TrialSpec, git_sha: str) -> str:
        """The trial's own run: found by its trial_id tag, else created with the resolved spec as params."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.trial_id = '{spec.trial_id}'")
        if found:
            return found[0].info.run_id
        from mlflow.entities import Param

        tags = {
            "trial_id": spec.trial_id,
            "dataset": spec.dataset.name,
            "regime": spec.regime_name,
            "strategy": spec.strategy.shown,
            "strategy_name": spec.strategy.name,
            "seed": str(spec.seed),
            "model": spec.model,
            "git_sha": git_sha,
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=spec.label)
        resolved = spec.model_dump(mode="json")
        # every setting of the strategy, defaults included, so the UI compares variants column by column
        settings = validate_settings(spec.strategy.name, spec.strategy.settings).model_dump(mode="json")
        resolved["strategy"] = {"name": spec.strategy.name, "label": spec.strategy.shown, **settings}
        params = flatten("", resolved, {})
        names = sorted(params)
        for start in range(0, len(names), 100):  # MLflow takes at most 100 params per batch
            batch = [Param(k, params[k][:6000]) for k in names[start : start + 100]]
            self.client.log_batch(run.info.run_id, params=batch)
        self.client.update_run(run.info.run_id, status="SCHEDULED")
        return run.info.run_id

    def log_rounds(self, run_id: str, records: list[RoundRecord]) -> int:
        """Logs the rounds not yet in the run (metric step = n_labeled); returns how many were new."""
        from mlflow.entities import Metric

        if run_id not in self._logged:  # once per run: the driver is its only writer, so a cache stays true
            self._logged[run_id] = {m.step for m in self.client.get_metric_history(run_id, "test_accuracy")}
        logged = self._logged[run_id]
        new = [r for r in records if r.n_labeled not in logged]
        metrics = [
            Metric(name, float(getattr(r, name)), 0, r.n_labeled)
            for r in new
            for name in ROUND_METRICS
            if getattr(r, name) is not None  # GPU use on a CPU; train_accuracy of rounds from before it was kept
        ]
        metrics += [Metric("round", float(r.round), 0, r.n_labeled) for r in new]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        logged.update(r.n_labeled for r in new)
        return len(new)

    def retag(self, run_id: str, trial_id: str, legacy_id: str) -> None:
        """A run of a trial carried over from albench <= 17506af: found by its new id from now on."""
        self.client.set_tag(run_id, "trial_id", trial_id)
        self.client.set_tag(run_id, "legacy_trial_id", legacy_id)

    def delete_if_empty(self, run_id: str) -> bool:
        """Deletes a run that holds no metric point (a trial that never completed a round)."""
        if self.client.get_run(run_id).data.metrics:
            return False
        self.client.delete_run(run_id)
        return True

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING, FINISHED, FAILED or SCHEDULED (a resumed trial's run goes back to RUNNING)."""
        if status in ("FINISHED", "FAILED", "KILLED"):
            self.client.set_terminated(run_id, status)
        else:
            self.client.update_run(run_id, status=status)
