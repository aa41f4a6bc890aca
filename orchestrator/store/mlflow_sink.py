"""MLflow off the driver's critical path: a background thread brings each trial's run up to what the bookkeeper
wants of it, so that a slow or absent tracking server never stalls a trial.

The bookkeeper states, per trial, what its run should hold (the run itself, its datasets, every round's points,
its status) and goes on; rows and checkpoints are written first, on the driver's own thread. The thread here
applies the latest wanted state of one trial at a time, in the order they changed. Every step is an idempotent
projection (`orchestrator.store.tracking`: runs found by their trial_id tag, only missing steps logged), so a state that
changed meanwhile is simply applied again, and a failed step is retried, with a growing pause, until it lands:
no point is ever dropped. Each applied state comes back as a `Synced` fingerprint, which the bookkeeper keeps in
the trial's ledger entry: a finished trial whose fingerprint matches needs no MLflow call at all in a later run.
If the server is still away when the run ends, the next `albench run` projects the checkpoints again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from experiments.records import RoundRecord
from experiments.specs import TrialSpec
from orchestrator.engine.inputs import DatasetDigest
from orchestrator.store.tracking import Tracker

MAX_PAUSE_S = 15.0  # the longest pause between two tries while the tracking server is away
# a trial's changes are applied this long after the first of them: a short trial's run is created, logged and
# ended in one go (each MLflow call costs the driver's CPU), while a long trial's points lag by about a second
GATHER_S = 1.0


@dataclass(frozen=True)
class Wanted:
    """What one trial's MLflow run should hold."""

    spec: TrialSpec
    run_id: str | None = None  # None: found by its trial_id tag, else created
    inputs: tuple[DatasetDigest, ...] | None = None  # datasets to link (once per process)
    records: tuple[RoundRecord, ...] = ()  # every round so far
    status: str | None = None  # MLflow's name: SCHEDULED, RUNNING, FINISHED, FAILED
    status_ms: int = 0  # when the trial reached it (a lagging FINISHED keeps the trial's own end time)


@dataclass(frozen=True)
class Synced:
    """What MLflow holds of a trial, as applied: its run, and the fingerprint of that state."""

    trial_id: str
    run_id: str
    fingerprint: str


@dataclass
class _Queue:
    wanted: dict[str, Wanted] = field(default_factory=dict)
    # trial id -> when its oldest change not yet applied was wanted (monotonic s), oldest first
    dirty: OrderedDict[str, float] = field(default_factory=OrderedDict)
    synced: list[Synced] = field(default_factory=list)  # applied, not yet taken by the bookkeeper
    busy: bool = False


class MlflowSink:
    """One writer thread per tracker, started on the first wish and stopped by `settle`."""

    def __init__(self, tracker: Tracker, git_sha: str, report: Callable[[str], None] = print) -> None:
        self.tracker, self.git_sha, self.report = tracker, git_sha, report
        self._queue = _Queue()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._settling = False
        self._linked: set[str] = set()  # trial ids whose run was linked to the parent and its datasets
        self.error: str | None = None  # the last failure while the server is away

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks (and so the bookkeeper) into its experiment state: a copy has no thread and
        nothing queued, and is never used to write."""
        state = self.__dict__.copy()
        state.update(_queue=_Queue(), _cond=None, _thread=None, report=print)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cond = threading.Condition()

    # -- the bookkeeper's side (its own thread)
    def want(self, spec: TrialSpec, run_id: str | None, **changes) -> None:
        """Merges `changes` (inputs, records, status) into what the trial's run should hold; returns at once."""
        if "status" in changes:
            changes["status_ms"] = int(time.time() * 1000)
        if "records" in changes:
            changes["records"] = tuple(changes["records"])
        if changes.get("inputs") is not None:
            changes["inputs"] = tuple(changes["inputs"])
        with self._cond:
            known = self._queue.wanted.get(spec.trial_id) or Wanted(spec)
            self._queue.wanted[spec.trial_id] = replace(known, spec=spec, run_id=known.run_id or run_id, **changes)
            self._queue.dirty.setdefault(spec.trial_id, time.monotonic())
            self._start()
            self._cond.notify_all()

    def take_synced(self) -> list[Synced]:
        """The states applied since the last call, for the ledger."""
        with self._cond:
            synced, self._queue.synced = self._queue.synced, []
        return synced

    def behind(self) -> int:
        """How many trials' runs are not yet up to date."""
        with self._cond:
            return len(self._queue.dirty) + self._queue.busy

    def lag_s(self) -> float:
        """How long the oldest change not yet in MLflow has waited (0 when it holds everything)."""
        with self._cond:
            oldest = next(iter(self._queue.dirty.values()), None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def settle(self, timeout_s: float) -> int:
        """Waits up to `timeout_s` for every run to be up to date, then stops the thread; returns how many trials
        are still behind (then the thread may still be inside one call: the tracker is not to be used)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._settling = True  # no gathering: everything now
            self._cond.notify_all()
            while (self._queue.dirty or self._queue.busy) and time.monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            self._stopping, self._settling = True, False
            self._cond.notify_all()
            left = len(self._queue.dirty) + self._queue.busy
        if self._thread is not None:
            self._thread.join(timeout=1.0 if left else 30.0)
            if not self._thread.is_alive():
                self._thread = None
        with self._cond:
            self._stopping = False
        return left

    @property
    def idle(self) -> bool:
        """No thread is using the tracker: the bookkeeper's thread may."""
        return self._thread is None

    # -- the writer thread
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="albench-mlflow", daemon=True)
            self._thread.start()

    def _next(self) -> Wanted | None:
        with self._cond:
            while not self._stopping:
                oldest = next(iter(self._queue.dirty.values()), None)
                if oldest is not None and (self._settling or time.monotonic() >= oldest + GATHER_S):
                    break
                self._cond.wait(None if oldest is None else oldest + GATHER_S - time.monotonic())
            if self._stopping:
                return None
            trial_id, _ = self._queue.dirty.popitem(last=False)
            self._queue.busy = True
            return self._queue.wanted[trial_id]

    def _loop(self) -> None:
        pause = 1.0
        while (wanted := self._next()) is not None:
            try:
                synced = self._apply(wanted)
            except Exception as error:  # the server is away or failing: retry the same trial after a pause
                self._failed(wanted, error)
                with self._cond:
                    self._cond.wait(pause)
                pause = min(2 * pause, MAX_PAUSE_S)
                continue
            pause = 1.0
            with self._cond:
                self._queue.busy = False
                self._queue.synced.append(synced)
                known = self._queue.wanted[synced.trial_id]
                self._queue.wanted[synced.trial_id] = replace(known, run_id=synced.run_id)
                self._cond.notify_all()
            if self.error is not None:
                self.error = None
                self.report(f"MLflow is reachable again; {self.behind()} trials' runs to bring up to date")

    def _failed(self, wanted: Wanted, error: Exception) -> None:
        with self._cond:
            self._queue.busy = False
            self._queue.dirty[wanted.spec.trial_id] = time.monotonic() - GATHER_S  # first again, due at once
            self._queue.dirty.move_to_end(wanted.spec.trial_id, last=False)
            self._cond.notify_all()
        first = self.error is None
        lines = str(error).strip().splitlines()
        self.error = f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
        if first:
            self.report(
                f"MLflow at {self.tracker.uri} failed ({self.error}); the trials go on, their rows and checkpoints "
                "are written, and MLflow is brought up to date when it answers again"
            )

    def _apply(self, wanted: Wanted) -> Synced:
        tracker, spec = self.tracker, wanted.spec
        run_id = wanted.run_id
        if spec.trial_id not in self._linked:  # once per process: filed under the parent, datasets logged
            # a run id the store does not know (deleted, or of another store) is found again by tag, or created
            if run_id is None or not tracker.link(run_id, wanted.inputs or ()):
                run_id = tracker.run_for(spec, self.git_sha, wanted.inputs or (), wanted.status or "SCHEDULED")
            self._linked.add(spec.trial_id)
        tracker.log_rounds(run_id, list(wanted.records))
        if wanted.status is not None:
            tracker.set_status(run_id, wanted.status, wanted.status_ms)
        return Synced(spec.trial_id, run_id, tracker.fingerprint(run_id, len(wanted.records), wanted.status))
