"""MLflow: one experiment per grid, a parent run for the grid, one child run per trial with its datasets as
inputs, one point per (trial, round, metric). Driver-side only.

The parent's id lives in the results folder (`mlflow-parent.json`, per tracking URI and grid); runs are found by their
`trial_id` tag before one is created, and only rounds whose step (n_labeled) is not yet in a run's history
are logged, so catching up after any crash, or rerunning a grid, never duplicates a run or a point.
Only `orchestrator.store.bookkeeper` uses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from experiments.records import GPU_FIELDS, RoundRecord
from experiments.specs import TrialSpec
from orchestrator.engine.inputs import DatasetDigest
from strategies import validate_settings

# MLflow 3.x opens an experiment by its kind: without it, on the GenAI overview (traces, tokens); with it, on its
# runs. The tag and value are those of the pinned MLflow's UI (its ExperimentKind enum).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PARENT_TAG = "mlflow.parentRunId"
CONTEXT_TAG = "mlflow.data.context"
GRID_ROLE = ("albench.role", "grid")  # marks the grid's parent run
PARENT_FILE = "mlflow-parent.json"

ROUND_METRICS = (
    "test_accuracy",
    "train_accuracy",
    "train_loss",
    "train_seconds",
    "eval_seconds",
    "query_seconds",
) + GPU_FIELDS


def metric_name(key: str) -> str:
    """MLflow metric names allow letters, digits and _-. /:  only; a variant label's parentheses, '=' and ','
    become '_' (the label stays readable: 'aulc/digits/tiny/bait_lam_0.01_')."""
    return re.sub(r"[^\w\-. /:]", "_", key)


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
        # MLflow prints two links to stdout per ended run on a server (and reads the run again to make them)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._logged: dict[str, set[int]] = {}  # run id -> steps already logged
        self._runs_by_trial: dict[str, str] | None = None  # trial id -> run id, listed once when first needed
        self._unfilled: set[str] = set()  # runs created whose params a failed call left unlogged
        self._creating: set[str] = set()  # trials whose run creation failed (the server may have made it)
        self._status: dict[str, str] = {}  # run id -> the status this tracker set last (it is the only writer)
        self.experiment, self.results = experiment, Path(results)
        self.parent_id: str | None = None  # set by open_grid: every trial run is filed under it
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
            if found.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # stores made before albench set it
                self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        else:
            artifacts = (Path(results) / "mlflow-artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifacts, tags=dict([EXPERIMENT_KIND])
            )

    # -- the grid's parent run
    def open_grid(self, grid_file: Path, resolved: dict, git_sha: str) -> str:
        """The grid's parent run, created once and found again by the id the results folder keeps (then by its
        tag): its artifacts are the grid file as written and the resolved grid, replaced on each run."""
        self.parent_id = self._stored_parent() or self._tagged_parent() or self._new_parent(git_sha)
        self._store_parent(self.parent_id)
        self.client.update_run(self.parent_id, status="RUNNING")
        repository = self._artifacts(self.parent_id)
        repository.log_artifact(str(grid_file), "grid")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "resolved.json"
            path.write_text(json.dumps(resolved, indent=1, sort_keys=True))
            repository.log_artifact(str(path), "grid")
        return self.parent_id

    def close_grid(self, status: str, summary: dict[str, float]) -> None:
        """The grid's summary as the parent's metrics (latest value wins), and its status."""
        from mlflow.entities import Metric

        if self.parent_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(k), float(v), now, 0) for k, v in sorted(summary.items())]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.parent_id, metrics=metrics[start : start + 1000])
        self.set_status(self.parent_id, status)

    def _parent_file(self) -> Path:
        return self.results / PARENT_FILE

    def find_grid(self) -> str | None:
        """The grid's parent run, if `open_grid` made one (for `albench report --mlflow`)."""
        self.parent_id = self._stored_parent() or self._tagged_parent()
        return self.parent_id

    def replace_report(self, folder: Path) -> None:
        """The report's files as the parent run's `report/` artifacts, replacing the previous copy whole (a file
        the new report no longer makes does not linger)."""
        repository = self._artifacts(self.parent_id)
        if self.client.list_artifacts(self.parent_id, "report"):
            repository.delete_artifacts("report")
        repository.log_artifacts(str(folder), "report")

    def _stored_parent(self) -> str | None:
        path = self._parent_file()
        stored = json.loads(path.read_text()).get(self.uri, {}).get(self.experiment) if path.exists() else None
        if not stored or stored.get("experiment_id") != self.experiment_id:
            return None
        try:
            run = self.client.get_run(stored["run_id"])
        except Exception:  # deleted from the store (mlflow gc) or another store at the same URI
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _tagged_parent(self) -> str | None:
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{GRID_ROLE[0]}` = '{GRID_ROLE[1]}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def _new_parent(self, git_sha: str) -> str:
        tags = dict([GRID_ROLE]) | {"git_sha": git_sha, "mlflow.note.content": f"albench grid '{self.experiment}'"}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=f"grid: {self.experiment}").info.run_id

    def _store_parent(self, run_id: str) -> None:
        path = self._parent_file()
        stored = json.loads(path.read_text()) if path.exists() else {}
        entry = {"experiment_id": self.experiment_id, "run_id": run_id}
        if stored.get(self.uri, {}).get(self.experiment) != entry:
            stored.setdefault(self.uri, {})[self.experiment] = entry
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text(json.dumps(stored, indent=1))
            temporary.replace(path)

    def _artifacts(self, run_id: str):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(self.client.get_run(run_id).info.artifact_uri, tracking_uri=self.uri)

    # -- the trials' runs
    def run_for(
        self, spec: TrialSpec, git_sha: str, inputs: Sequence[DatasetDigest] = (), status: str = "SCHEDULED"
    ) -> str:
        """The trial's own run: found by its trial_id tag, else created with the resolved spec as params (and
        `status`); filed under the grid's parent run, with its datasets as inputs."""
        run_id = self._trial_runs().get(spec.trial_id)
        if run_id is None and spec.trial_id in self._creating:  # the last try failed: did the server make it?
            run_id = self._search_trial_run(spec.trial_id)
            if run_id is not None:
                self._runs_by_trial[spec.trial_id] = run_id
                self._unfilled.add(run_id)
        if run_id is None or run_id in self._unfilled:
            if run_id is None:  # kept at once: a retry after a failed call fills this run, never makes another
                self._creating.add(spec.trial_id)
                run_id = self._runs_by_trial[spec.trial_id] = self._new_run(spec, git_sha)
                self._unfilled.add(run_id)
                self._creating.discard(spec.trial_id)
            self._fill_run(run_id, spec, status)
            self._log_inputs(run_id, inputs)  # a new run: filed under the parent at creation, nothing logged yet
            self._unfilled.discard(run_id)
            self._logged[run_id] = set()
        else:
            self.link(run_id, inputs)
        return run_id

    def _trial_runs(self) -> dict[str, str]:
        """Every trial run of the experiment by its trial_id tag, listed once (pages of 1,000): one query for a
        whole grid, not one per trial. The driver is the store's only writer, so the list stays true."""
        if self._runs_by_trial is None:
            found, token = {}, None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], filter_string="tags.trial_id LIKE '%'", max_results=1000, page_token=token
                )
                for run in page:
                    found.setdefault(run.data.tags["trial_id"], run.info.run_id)
                token = page.token
                if not token:
                    break
            self._runs_by_trial = found
        return self._runs_by_trial

    def _search_trial_run(self, trial_id: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.trial_id = '{trial_id}'")
        return runs[0].info.run_id if runs else None

    def link(self, run_id: str, inputs: Sequence[DatasetDigest] = ()) -> bool:
        """Files a trial's run under the grid's parent and logs its datasets, each once (runs of earlier albench
        versions, or of runs without a parent, are caught up here). False if the store has no such active run."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        if run.info.lifecycle_stage != "active":
            return False
        if self.parent_id is not None and run.data.tags.get(PARENT_TAG) != self.parent_id:
            self.client.set_tag(run_id, PARENT_TAG, self.parent_id)
        if not run.inputs.dataset_inputs:
            self._log_inputs(run_id, inputs)
        return True

    def _log_inputs(self, run_id: str, inputs: Sequence[DatasetDigest]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if inputs:
            datasets = [
                DatasetInput(
                    Dataset(d.name, d.digest, "albench", json.dumps(d.source), profile=json.dumps(d.profile)),
                    [InputTag(CONTEXT_TAG, d.context)],
                )
                for d in inputs
            ]
            self.client.log_inputs(run_id, datasets)

    def _new_run(self, spec: TrialSpec, git_sha: str) -> str:
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
        if self.parent_id is not None:
            tags[PARENT_TAG] = self.parent_id
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=spec.label)
        self._status[run.info.run_id] = "RUNNING"  # as MLflow creates a run
        return run.info.run_id

    def _fill_run(self, run_id: str, spec: TrialSpec, status: str) -> None:
        """A new run's params (the resolved spec) and status; logging the same params again is allowed."""
        from mlflow.entities import Param

        resolved = spec.model_dump(mode="json")
        # every setting of the strategy, defaults included, so the UI compares variants column by column
        settings = validate_settings(spec.strategy.name, spec.strategy.settings).model_dump(mode="json")
        resolved["strategy"] = {"name": spec.strategy.name, "label": spec.strategy.shown, **settings}
        params = flatten("", resolved, {})
        names = sorted(params)
        for start in range(0, len(names), 100):  # MLflow takes at most 100 params per batch
            batch = [Param(k, params[k][:6000]) for k in names[start : start + 100]]
            self.client.log_batch(run_id, params=batch)
        if status == "SCHEDULED":  # an ended status is set by `set_status`, with the trial's own end time
            self.set_status(run_id, status)

    def log_rounds(self, run_id: str, records: list[RoundRecord]) -> int:
        """Logs the rounds not yet in the run (metric step = n_labeled); returns how many were new."""
        from mlflow.entities import Metric, RunTag

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
        if new:  # the run's header: how its latest round ran (on a GPU: whether MPS served it; fused with how many)
            latest = new[-1]
            header = {
                "mps": None if latest.mps is None else ("on" if latest.mps else "off"),
                "fused_with": latest.fused_with,
            }
            tags = [RunTag(k, str(v)) for k, v in header.items() if v is not None]
            if tags:
                self.client.log_batch(run_id, tags=tags)
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

    def set_status(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        """RUNNING, FINISHED, FAILED or SCHEDULED (a resumed trial's run goes back to RUNNING); `end_ms`: when the
        trial ended (MLflow may be told late). A status this tracker set last is not set again.

        A run that already ended with this status keeps its end time: every later `albench run` of the grid
        plans its DONE trials again, and terminating their runs anew would stretch each one's duration in the
        UI to that later run (hours, for trials of seconds)."""
        previous = self._status.get(run_id)
        if previous == status:
            return
        if status in ("FINISHED", "FAILED", "KILLED"):
            if previous is None:  # not set by this process: read it
                info = self.client.get_run(run_id).info
                if info.status == status and info.end_time:
                    self._status[run_id] = status
                    return
            self.client.set_terminated(run_id, status, end_time=end_ms)
        else:
            self.client.update_run(run_id, status=status)
        self._status[run_id] = status

    def fingerprint(self, run_id: str, n_rounds: int, status: str | None) -> str:
        """What a trial's run holds, in one string a ledger entry keeps: this store, experiment and parent, the run,
        how many rounds, and its status. A later run that computes the same string for a finished trial knows
        MLflow has all of it, without asking."""
        return f"{self.where()}|{run_id}|{n_rounds}|{status}"

    def where(self) -> str:
        """This store, experiment and grid parent run, as one string."""
        return f"{self.uri}|{self.experiment_id}|{self.parent_id}"
