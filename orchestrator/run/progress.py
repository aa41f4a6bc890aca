"""A live one-line view of a running grid: trials by status, rounds, elapsed time and an ETA."""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.store.ledger import TrialEntry, TrialStatus

INTERVAL_S = 10.0  # seconds between progress lines
LAG_SHOWN_S = 30.0  # MLflow's lag behind the rows is shown from this many seconds on


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts come from the ledger entries; the ETA extrapolates the rounds completed in this run."""

    def __init__(
        self,
        entries: list[TrialEntry],
        report: Callable[[str], None],
        interval_s: float | None = None,
        waiting: Callable[[], str | None] | None = None,
        behind: Callable[[], float] | None = None,
    ) -> None:
        """`waiting`: why no trial can start (e.g. the cluster is too small for one), shown while none runs;
        `behind`: how long MLflow has lagged behind the rows (a slow tracking server), shown past `LAG_SHOWN_S`."""
        self.entries = entries
        self.waiting = waiting
        self.behind = behind
        self.report = report
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self.start = time.monotonic()
        self.rounds_at_start = sum(e.rounds_done for e in entries)
        self.last_print = 0.0

    def line(self) -> str:
        counts = {s: sum(e.status == s for e in self.entries) for s in TrialStatus}
        rounds = sum(e.rounds_done for e in self.entries)
        total = sum(e.n_rounds for e in self.entries)
        elapsed = time.monotonic() - self.start
        new = rounds - self.rounds_at_start
        unfinished = (TrialStatus.RUNNING, TrialStatus.PENDING)
        remaining = sum(e.n_rounds - e.rounds_done for e in self.entries if e.status in unfinished)
        eta = _duration(elapsed / new * remaining) if new else "?"
        line = (
            f"[{_duration(elapsed)}] trials: {counts[TrialStatus.DONE]} done, {counts[TrialStatus.RUNNING]} running, "
            f"{counts[TrialStatus.FAILED]} failed, {counts[TrialStatus.PENDING]} pending | "
            f"rounds {rounds}/{total} | ETA {eta}"
        )
        lag = self.behind() if self.behind is not None else 0.0
        line += f" | MLflow {_duration(lag)} behind" if lag > LAG_SHOWN_S else ""
        idle = counts[TrialStatus.RUNNING] == 0 and counts[TrialStatus.PENDING] > 0
        reason = self.waiting() if idle and self.waiting is not None else None
        return f"{line} | cannot start: {reason}" if reason else line

    def maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_print >= self.interval_s:
            self.last_print = now
            self.report(self.line())
