"""The one writer of a results folder's ledger, Parquet rows and MLflow runs, for both runners.

A runner reports events (a trial started, a round's checkpoint or a round-0 fit is stored, the trial finished
or failed) and the bookkeeper files them. Every sink is an idempotent projection of the trial's checkpoint
(Parquet: upsert on (trial_id, round); MLflow: only missing steps), so a crash between a checkpoint and its
sinks loses nothing: `plan` projects the same checkpoint again before anything runs. Status transitions
(`ALLOWED`): a DONE trial never runs again; a FAILED or interrupted one becomes PENDING at the next `plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.datasets import Dataset
from experiments.records import RoundRecord
from experiments.results import rounds_done, rows_of, trials_with_rows, write_rounds
from experiments.specs import SPEC_VERSION, TrialSpec
from orchestrator.engine.checkpoint import checkpoint_exists, read_records, remove_checkpoint, save_checkpoint, save_fit
from orchestrator.engine.inputs import DatasetDigest, save_labels, save_splits
from orchestrator.engine.provenance import git_sha
from orchestrator.engine.records import Round0Fit, TrialState
from orchestrator.store.carry_over import CarryOver
from orchestrator.store.ledger import (
    TrialEntry,
    TrialStatus,
    read_entry,
    read_round0_entry,
    write_entry,
    write_round0_entry,
)
from orchestrator.store.mlflow_sink import MlflowSink
from orchestrator.store.tracking import Tracker, default_tracking_uri
from orchestrator.store.upgrade import same_name_elsewhere

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


CHECKPOINTS_DIR = "checkpoints"  # RESULTS/checkpoints/<trial id>: the in-process backend's trial checkpoints
FITS_DIR = "round0"  # RESULTS/checkpoints/round0/<key>: its round-0 fits
MLFLOW_WAIT_S = 120.0  # how long the end of a run waits for a lagging tracking server


class Bookkeeper(CarryOver):
    """Files a runner's events in the ledger, the Parquet rows and MLflow (carrying older trials over: `CarryOver`)."""

    def __init__(self, results: str | Path, tracker: Tracker | None, mlflow_wait_s: float = MLFLOW_WAIT_S) -> None:
        self.results = Path(results)
        self.tracker = tracker
        self.sha = git_sha()
        self.sink = None if tracker is None else MlflowSink(tracker, self.sha)
        self.mlflow_wait_s = mlflow_wait_s
        self._entries: dict[str, TrialEntry] = {}  # the planned trials' entries: the sink's news lands in them
        self._specs: dict[str, TrialSpec] = {}
        self._unwritten: set[str] = set()  # entries whose MLflow news is not yet on disk

    @classmethod
    def tracking(
        cls, results: str | Path, tracking_uri: str | None, experiment: str, mlflow_wait_s: float = MLFLOW_WAIT_S
    ) -> Bookkeeper:
        """With MLflow at `tracking_uri` (default: SQLite in the results folder, created now; 'none': off)."""
        if tracking_uri == "none":
            return cls(results, None)
        Path(results).mkdir(parents=True, exist_ok=True)
        tracker = Tracker(tracking_uri or default_tracking_uri(Path(results)), experiment, Path(results))
        return cls(results, tracker, mlflow_wait_s)

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
        """A usable URI of round-0 group `key`'s stored fit (orchestrator.engine.round0), or None where it is to be
        trained."""
        entry = read_round0_entry(self.results, key)
        uri = None if entry is None else self.located(entry["checkpoint"], key)
        return uri if uri and checkpoint_exists(uri) else None

    def record_round0_fit(self, key: str, uri: str, trial_ids: list[str]) -> None:
        """A group's round-0 fit is stored at `uri`: its members start from it (those of a later run too)."""
        write_round0_entry(self.results, {"round0_key": key, "checkpoint": self.stored(uri), "trials": trial_ids})

    # -- what a run stores in the results folder besides its trials' rows
    def save_inputs(self, datasets: dict[str, Dataset]) -> None:
        """The datasets' seeded splits (which images were tested) and train-pool labels (the picks' histograms)."""
        save_splits(self.results, datasets)
        save_labels(self.results, datasets)

    def store_state(self, item: Planned, state: TrialState) -> None:
        """A trial's state after a round, run in this process: its checkpoint in RESULTS/checkpoints/<id>, then
        the round's records (`record`). A carried-over trial's older checkpoint beside it, now superseded, goes."""
        folder = (self.results / CHECKPOINTS_DIR / state.trial_id).resolve()
        previous = self.checkpoint_of(item.entry)
        save_checkpoint(state, folder)
        self.record(item, str(folder), state.records, state.extra)
        if previous and Path(previous) != folder and Path(previous).parent == folder.parent:
            remove_checkpoint(previous)

    def store_fit(self, fit: Round0Fit, trial_ids: list[str]) -> None:
        """A round-0 group's fit, trained in this process: stored in RESULTS/checkpoints/round0/<key>, then filed."""
        folder = (self.results / CHECKPOINTS_DIR / FITS_DIR / fit.key).resolve()
        save_fit(fit, folder)
        self.record_round0_fit(fit.key, str(folder), trial_ids)

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
        if self.sink is not None:
            self.sink.report = report
        with_rows = trials_with_rows(self.results)
        planned = []
        for spec in specs:
            entry = read_entry(self.results, spec.trial_id) or TrialEntry(
                spec.trial_id, spec.label, spec.experiment, len(spec.regime.labeled_counts)
            )
            self._entries[spec.trial_id], self._specs[spec.trial_id] = entry, spec
            if self._settled(spec, entry, with_rows):  # finished and filed everywhere: nothing to read or write
                planned.append(Planned(spec, entry))
                continue
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

    def _settled(self, spec: TrialSpec, entry: TrialEntry, with_rows: set[str]) -> bool:
        """A DONE trial whose entry, rows and MLflow run (by the fingerprint the sink left) already hold all of it
        under this spec: a re-run of a finished grid neither reads its checkpoint nor asks MLflow."""
        if entry.status != DONE or entry.rounds_done < entry.n_rounds or spec.trial_id not in with_rows:
            return False
        if (entry.label, entry.experiment, entry.spec_version) != (spec.label, spec.experiment, SPEC_VERSION):
            return False
        if self.tracker is not None:
            synced = self.tracker.fingerprint(entry.mlflow_run_id, entry.rounds_done, MLFLOW_STATUS[DONE])
            if entry.mlflow_run_id is None or entry.mlflow_synced != synced:
                return False
        return entry.spec == spec.model_dump_json()

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
        if self.mlflow_usable:
            statuses = {e.status for e in entries}
            status = "FAILED" if FAILED in statuses else "FINISHED" if statuses <= {DONE} else "SCHEDULED"
            self.tracker.close_grid(status, summary)

    def log_report(self, folder: Path) -> bool:
        """The report as the grid's parent-run artifacts (replacing the previous copy); False without one."""
        if not self.mlflow_usable or (self.tracker.parent_id is None and self.tracker.find_grid() is None):
            return False
        self.tracker.replace_report(folder)
        return True

    @property
    def mlflow_usable(self) -> bool:
        """MLflow is on and no sink thread is inside a call (it is, after a run that could not reach the server)."""
        return self.tracker is not None and self.sink.idle

    def mlflow_lag_s(self) -> float:
        """How long the oldest change not yet in MLflow has waited (a slow tracking server)."""
        return 0.0 if self.sink is None else self.sink.lag_s()

    def settle(self, report: Callable[[str], None] = print) -> int:
        """After a run: waits up to `mlflow_wait_s` for MLflow to hold every round and status, files what it holds
        in the ledger, and returns how many trials' runs are still behind (said aloud; the next run catches up)."""
        if self.sink is None:
            return 0
        left = self.sink.settle(self.mlflow_wait_s)
        self._file_synced(persist=True)
        if left:
            report(
                f"MLflow at {self.tracker.uri} is {left} trials behind after waiting {self.mlflow_wait_s:.0f} s "
                f"({self.sink.error}); the rows and checkpoints are complete, and the next `albench run` of this grid "
                "brings MLflow up to date"
            )
        return left

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

    # MLflow goes through the sink's thread (`orchestrator.store.mlflow_sink`): the ledger and rows are written here,
    # first; the sink's news (a run's id, what it holds) is filed in the ledger at the next event.
    def _open_run(self, spec: TrialSpec, entry: TrialEntry, inputs: list[DatasetDigest]) -> None:
        if self.sink is not None:  # the entry is written by the status `plan` sets next
            self.sink.want(spec, entry.mlflow_run_id, inputs=inputs)

    def _project(self, spec: TrialSpec, entry: TrialEntry, uri: str, records: list[RoundRecord]) -> None:
        entry.checkpoint, entry.rounds_done = self.stored(uri), len(records)
        write_entry(self.results, entry)
        self._unwritten.discard(entry.trial_id)
        write_rounds(self.results, rows_of(spec, records))
        if self.sink is not None:
            self.sink.want(spec, entry.mlflow_run_id, records=records)
            self._file_synced()

    def _set(self, entry: TrialEntry, status: TrialStatus, error: str = "") -> None:
        if status not in ALLOWED[entry.status]:
            raise StatusError(f"trial {entry.trial_id} ({entry.label}): {entry.status} -> {status} is not allowed")
        entry.status, entry.error = status, error
        write_entry(self.results, entry)
        self._unwritten.discard(entry.trial_id)
        if self.sink is not None:
            self.sink.want(self._spec_of(entry), entry.mlflow_run_id, status=MLFLOW_STATUS[status])

    def _spec_of(self, entry: TrialEntry) -> TrialSpec:
        return self._specs.get(entry.trial_id) or TrialSpec.model_validate_json(entry.spec)

    def _file_synced(self, persist: bool = False) -> None:
        """The sink's applied states into the ledger entries: each trial's run id and what its run holds. Written
        with the entry's next change, or at `settle` (`persist`): a run id not yet written is found again by its
        tag, and a fingerprint not yet written only makes the next plan project that trial once more."""
        for synced in self.sink.take_synced():
            entry = self._entries.get(synced.trial_id)
            if entry is not None:
                entry.mlflow_run_id, entry.mlflow_synced = synced.run_id, synced.fingerprint
                self._unwritten.add(synced.trial_id)
        if persist:
            for trial_id in self._unwritten:
                write_entry(self.results, self._entries[trial_id])
            self._unwritten.clear()
