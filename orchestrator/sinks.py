"""The result sinks as idempotent projections of a trial's checkpoint: Parquet rows and MLflow points.

Both are written by the driver only. Each call re-projects every record the checkpoint holds (upsert on
(trial_id, round) for Parquet, missing steps only for MLflow), so a crash between a checkpoint and a write
loses nothing: the next run projects the same checkpoint again.
"""

from __future__ import annotations

from pathlib import Path

from experiments.specs import TrialSpec
from orchestrator.ledger import TrialEntry, write_entry
from orchestrator.provenance import git_sha
from orchestrator.records import RoundRecord
from orchestrator.results import rows_of, write_rounds
from orchestrator.tracking import Tracker


class Sinks:
    def __init__(self, results: Path, tracker: Tracker | None) -> None:
        self.results = Path(results)
        self.tracker = tracker
        self.sha = git_sha()

    def open_run(self, spec: TrialSpec, entry: TrialEntry) -> None:
        """Finds or creates the trial's MLflow run and keeps its id in the trial's ledger entry."""
        if self.tracker is not None and entry.mlflow_run_id is None:
            entry.mlflow_run_id = self.tracker.run_for(spec, self.sha)
            write_entry(self.results, entry)

    def project(self, spec: TrialSpec, entry: TrialEntry, records: list[RoundRecord], device: str) -> None:
        """Writes every record to Parquet (upsert) and logs the rounds MLflow lacks."""
        write_rounds(self.results, rows_of(spec, records, self.sha, device))
        if self.tracker is not None and entry.mlflow_run_id is not None:
            self.tracker.log_rounds(entry.mlflow_run_id, records)

    def set_status(self, entry: TrialEntry, status: str, error: str = "") -> None:
        """The trial's status in the ledger and, mapped, in MLflow (done -> FINISHED, failed -> FAILED)."""
        entry.status, entry.error = status, error
        write_entry(self.results, entry)
        mlflow_status = {"running": "RUNNING", "done": "FINISHED", "failed": "FAILED", "pending": "SCHEDULED"}[status]
        if self.tracker is not None and entry.mlflow_run_id is not None:
            self.tracker.set_status(entry.mlflow_run_id, mlflow_status)
