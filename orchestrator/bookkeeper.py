"""The one writer of a results folder's ledger, Parquet rows and MLflow runs, for both runners.

A runner reports events (a trial started, a round's checkpoint or a round-0 fit is stored, the trial finished
or failed) and the bookkeeper files them. Every sink is an idempotent projection of the trial's checkpoint
(Parquet: upsert on (trial_id, round); MLflow: only missing steps), so a crash between a checkpoint and its
sinks loses nothing: `plan` projects the same checkpoint again before anything runs. Status transitions
(`ALLOWED`): a DONE trial never runs again; a FAILED or interrupted one becomes PENDING at the next `plan`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.records import RoundRecord
from experiments.results import rounds_done, rows_of, spec_columns, trial_file, write_rounds
from experiments.specs import SPEC_VERSION, TrialSpec
from orchestrator.checkpoint import checkpoint_exists, read_records
from orchestrator.inputs import DatasetDigest
from orchestrator.ledger import (
    TrialEntry,
    TrialStatus,
    entry_path,
    read_entry,
    read_round0_entry,
    remove_entry,
    write_entry,
    write_round0_entry,
)
from orchestrator.provenance import git_sha
from orchestrator.tracking import Tracker, default_tracking_uri
from orchestrator.upgrade import (
    SET_ASIDE_DIR,
    UpgradeError,
    cannot_carry_over,
    find_v0_trials,
    rounds_of,
    same_name_elsewhere,
)

PENDING, RUNNING, DONE, FAILED = TrialStatus
ALLOWED = {
    PENDING: {PENDING, RUNNING, DONE, FAILED},
    RUNNING: {RUNNING, PENDING, DONE, FAILED},  # RUNNING again: Tune restarted it after a lost worker
    FAILED: {FAILED, PENDING, DONE},
    DONE: {DONE},
}
MLFLOW_STATUS = {PENDING: "SCHEDULED", RUNNING: "RUNNING", DONE: "FINISHED", FAILED: "FAILED"}


class StatusError(RuntimeError):
    """A transition the ledger forbids, e.g. running a DONE trial again: a bug, never a user error."""


@dataclass
class Planned:
    spec: TrialSpec
    entry: TrialEntry

    @property
    def complete(self) -> bool:
        return self.entry.rounds_done >= self.entry.n_rounds


class Bookkeeper:
    def __init__(self, results: str | Path, tracker: Tracker | None) -> None:
        self.results = Path(results)
        self.tracker = tracker
        self.sha = git_sha()

    @classmethod
    def tracking(cls, results: str | Path, tracking_uri: str | None, experiment: str) -> Bookkeeper:
        """With MLflow at `tracking_uri` (default: SQLite in the results folder, created now; 'none': off)."""
        if tracking_uri == "none":
            return cls(results, None)
        Path(results).mkdir(parents=True, exist_ok=True)
        return cls(results, Tracker(tracking_uri or default_tracking_uri(Path(results)), experiment, Path(results)))

    @property
    def tracking_uri(self) -> str | None:
        return None if self.tracker is None else self.tracker.uri

    # -- where checkpoints are: relative to the results folder inside it, so a moved folder still resumes
    def stored(self, uri: str) -> str:
        path = Path(uri)
        if "://" not in uri and path.is_absolute() and path.is_relative_to(self.results.resolve()):
            return str(path.relative_to(self.results.resolve()))
        return uri

    def located(self, stored: str | None, *ids: str | None) -> str | None:
        """A usable URI for a ledger's checkpoint. An absolute path outside this results folder whose tail, naming
        the trial, is inside it is taken from inside it: a folder copied from a cluster or moved resumes from its
        own checkpoints. Other absolute paths and URIs are shared storage, used as they are."""
        if stored is None or "://" in stored:
            return stored
        path, here = Path(stored), self.results.resolve()
        if not path.is_absolute():
            return str(here / path)
        if path.is_relative_to(here):
            return stored
        for start in range(1, len(path.parts)):
            tail = Path(*path.parts[start:])
            if any(i and i in tail.parts for i in ids) and (here / tail).exists():
                return str(here / tail)
        return stored

    def checkpoint_of(self, entry: TrialEntry) -> str | None:
        return self.located(entry.checkpoint, entry.trial_id, entry.legacy_id)

    def round0_fit(self, key: str) -> str | None:
        """A usable URI of round-0 group `key`'s stored fit (orchestrator.round0), or None where it is to be trained."""
        entry = read_round0_entry(self.results, key)
        uri = None if entry is None else self.located(entry["checkpoint"], key)
        return uri if uri and checkpoint_exists(uri) else None

    def record_round0_fit(self, key: str, uri: str, trial_ids: list[str]) -> None:
        """A group's round-0 fit is stored at `uri`: its members start from it (those of a later run too)."""
        write_round0_entry(self.results, {"round0_key": key, "checkpoint": self.stored(uri), "trials": trial_ids})

    # -- before a run
    def plan(
        self,
        specs: list[TrialSpec],
        report: Callable[[str], None] = print,
        inputs: Callable[[TrialSpec], list[DatasetDigest]] | None = None,
    ) -> list[Planned]:
        """Every trial of the grid with its ledger entry caught up to its checkpoint; unfinished ones PENDING.
        `inputs`: the datasets each trial reads, logged with its MLflow run."""
        for line in same_name_elsewhere(self.results, specs):
            report(line)
        planned = []
        for spec in specs:
            entry = read_entry(self.results, spec.trial_id) or TrialEntry(
                spec.trial_id, spec.label, spec.experiment, len(spec.regime.labeled_counts)
            )
            entry.label, entry.experiment = spec.label, spec.experiment  # names may change; the id does not
            entry.spec_version, entry.spec = SPEC_VERSION, spec.model_dump_json()
            self._open_run(spec, entry, inputs(spec) if inputs else [])
            uri = self.checkpoint_of(entry)
            if uri and not checkpoint_exists(uri):
                self._lost_checkpoint(spec, entry, uri, report)
            elif uri:
                records, _ = read_records(uri, spec.trial_id, entry.legacy_id)
                self._project(spec, entry, uri, records)
            item = Planned(spec, entry)
            self._set(entry, DONE if item.complete else PENDING)
            planned.append(item)
        return planned

    def _lost_checkpoint(self, spec: TrialSpec, entry: TrialEntry, uri: str, report: Callable[[str], None]) -> None:
        """A DONE trial whose rows are all recorded needs no checkpoint; any other starts again from round 1,
        said aloud (the one way out of DONE: its checkpoint and its rows are gone)."""
        if entry.status == DONE and rounds_done(self.results, spec.trial_id) >= entry.n_rounds:
            report(f"{spec.label}: its checkpoint {uri} is gone; its {entry.n_rounds} rounds stay in the results")
            return
        report(f"{spec.label}: its checkpoint {uri} is gone; the trial restarts from round 1")
        entry.checkpoint, entry.rounds_done, entry.status = None, 0, PENDING

    # -- the grid as a whole (MLflow's parent run)
    def open_grid(self, grid_file: Path, resolved: dict) -> None:
        if self.tracker is not None:
            self.tracker.open_grid(grid_file, resolved, self.sha)

    def close_grid(self, entries: list[TrialEntry], summary: dict[str, float]) -> None:
        """The grid's summary metrics on its parent run; FINISHED when every trial is DONE."""
        if self.tracker is not None:
            statuses = {e.status for e in entries}
            status = "FAILED" if FAILED in statuses else "FINISHED" if statuses <= {DONE} else "SCHEDULED"
            self.tracker.close_grid(status, summary)

    def log_report(self, folder: Path) -> bool:
        """The report as the grid's parent-run artifacts (replacing the previous copy); False without one."""
        if self.tracker is None or (self.tracker.parent_id is None and self.tracker.find_grid() is None):
            return False
        self.tracker.replace_report(folder)
        return True

    # -- events of a run
    def start(self, item: Planned) -> None:
        self._set(item.entry, RUNNING)

    def record(self, item: Planned, uri: str, records: list[RoundRecord], extra: dict[str, str]) -> None:
        """A round's checkpoint is stored: the ledger points at it, then Parquet and MLflow get its rounds."""
        node = extra.get("node")
        if node and node not in item.entry.nodes[-1:]:
            item.entry.nodes.append(node)
        self._project(item.spec, item.entry, uri, records)

    def finish(self, item: Planned) -> None:
        """The runner is done with the trial: DONE if every round is recorded, else PENDING (interrupted)."""
        if item.entry.status != FAILED:
            self._set(item.entry, DONE if item.complete else PENDING)

    def fail(self, item: Planned, error: str) -> None:
        self._set(item.entry, FAILED, error)

    def release(self, items: list[Planned]) -> None:
        """After a run: trials it left RUNNING (interrupted) are PENDING for the next one."""
        for item in items:
            if item.entry.status == RUNNING:
                self._set(item.entry, PENDING)

    # -- carrying over trials of albench <= 17506af (translated by orchestrator.upgrade)
    def carry_over(self, report: Callable[[str], None] = print, set_aside: bool = False) -> int:
        """Files every trial of albench <= 17506af in the results folder under today's id; returns how many.

        A trial that cannot be carried over is never started again silently: the run stops, naming it, why, and
        what to do, unless `set_aside` moves its files to RESULTS/set-aside/ (kept, not used)."""
        found = find_v0_trials(self.results)
        if found.problems and not set_aside:
            raise UpgradeError(cannot_carry_over(self.results, found.problems))
        for old in found.unstarted:
            self.drop_unstarted(old)
            report(f"{old['label']}: written by an older albench, never started; it starts under its new id")
        for spec, old, rows in found.carried:
            self.adopt(spec, old, rows)
            report(
                f"{spec.label}: carried over from albench {rows[0]['git_sha'][:7]} (trial {old['trial_id']} is now "
                f"{spec.trial_id}, {rounds_of(old)})"
            )
        for old, why in found.problems:
            report(f"{why}\n  set aside in {self.set_aside(old)}")
        return len(found.carried)

    def adopt(self, spec: TrialSpec, old: dict, old_rows: list[dict]) -> TrialEntry:
        """Files an old trial under its new id: rows rewritten with today's spec columns, the same checkpoint and
        MLflow run. New files first, old ones last, so a crash in between only repeats this step."""
        write_rounds(self.results, [{**row, **spec_columns(spec)} for row in old_rows])
        status = TrialStatus(old.get("status", PENDING))  # the next plan sets a RUNNING one PENDING
        checkpoint = self.located(old.get("checkpoint"), old["trial_id"])
        entry = TrialEntry(
            spec.trial_id,
            spec.label,
            spec.experiment,
            len(spec.regime.labeled_counts),
            status,
            old.get("rounds_done", 0),
            None if checkpoint is None else self.stored(checkpoint),
            old.get("mlflow_run_id"),
            old.get("error", ""),
            list(old.get("nodes", [])),
            SPEC_VERSION,
            spec.model_dump_json(),
            old["trial_id"],
        )
        write_entry(self.results, entry)
        if self.tracker is not None and entry.mlflow_run_id:
            self.tracker.retag(entry.mlflow_run_id, spec.trial_id, old["trial_id"])
        self._remove_files(old["trial_id"])
        return entry

    def drop_unstarted(self, old: dict) -> None:
        """An old trial that never completed a round: nothing to keep (its empty MLflow run goes too)."""
        if self.tracker is not None and old.get("mlflow_run_id"):
            self.tracker.delete_if_empty(old["mlflow_run_id"])
        remove_entry(self.results, old["trial_id"])

    def set_aside(self, old: dict) -> Path:
        """Moves a trial's ledger entry, rows and (local) checkpoint into RESULTS/set-aside/<id>/: kept, not used."""
        folder = self.results / SET_ASIDE_DIR / old["trial_id"]
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = self.located(old.get("checkpoint"), old["trial_id"])
        paths = [entry_path(self.results, old["trial_id"]), trial_file(self.results, old["trial_id"])]
        if checkpoint and "://" not in checkpoint and Path(checkpoint).is_relative_to(self.results.resolve()):
            paths.append(Path(checkpoint))
        for path in paths:
            if path.exists():
                shutil.move(str(path), str(folder / path.name))
        return folder

    # -- the sinks
    def _open_run(self, spec: TrialSpec, entry: TrialEntry, inputs: list[DatasetDigest]) -> None:
        if self.tracker is not None and entry.mlflow_run_id is None:
            entry.mlflow_run_id = self.tracker.run_for(spec, self.sha, inputs)
        elif self.tracker is not None:
            self.tracker.link(entry.mlflow_run_id, inputs)
        write_entry(self.results, entry)

    def _project(self, spec: TrialSpec, entry: TrialEntry, uri: str, records: list[RoundRecord]) -> None:
        entry.checkpoint, entry.rounds_done = self.stored(uri), len(records)
        write_entry(self.results, entry)
        write_rounds(self.results, rows_of(spec, records))
        if self.tracker is not None and entry.mlflow_run_id is not None:
            self.tracker.log_rounds(entry.mlflow_run_id, records)

    def _set(self, entry: TrialEntry, status: TrialStatus, error: str = "") -> None:
        if status not in ALLOWED[entry.status]:
            raise StatusError(f"trial {entry.trial_id} ({entry.label}): {entry.status} -> {status} is not allowed")
        entry.status, entry.error = status, error
        write_entry(self.results, entry)
        if self.tracker is not None and entry.mlflow_run_id is not None:
            self.tracker.set_status(entry.mlflow_run_id, MLFLOW_STATUS[status])

    def _remove_files(self, trial_id: str) -> None:
        trial_file(self.results, trial_id).unlink(missing_ok=True)
        remove_entry(self.results, trial_id)
