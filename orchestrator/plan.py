"""Before a run: bring every trial's sinks up to its checkpoint, and list the trials that still have rounds to do.

This is what makes rerunning the same command after any interruption complete only what is missing, and
what lets an edited grid (more seeds, more strategies) run only its new trials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.specs import TrialSpec
from orchestrator.checkpoint import checkpoint_exists, read_records
from orchestrator.ledger import TrialEntry, read_entry, write_entry
from orchestrator.sinks import Sinks


@dataclass
class Planned:
    spec: TrialSpec
    entry: TrialEntry

    @property
    def complete(self) -> bool:
        return self.entry.rounds_done >= self.entry.n_rounds


def plan(specs: list[TrialSpec], results: Path, sinks: Sinks, report: Callable[[str], None] = print) -> list[Planned]:
    """Every trial of the grid with its (caught-up) ledger entry; incomplete ones are set to pending."""
    planned = []
    for spec in specs:
        entry = read_entry(results, spec.trial_id) or TrialEntry(
            spec.trial_id, spec.label, spec.experiment, len(spec.regime.labeled_counts)
        )
        write_entry(results, entry)
        sinks.open_run(spec, entry)
        if entry.checkpoint and not checkpoint_exists(entry.checkpoint):
            report(f"{spec.label}: its checkpoint {entry.checkpoint} is gone; the trial restarts from round 1")
            entry.checkpoint, entry.rounds_done = None, 0
        if entry.checkpoint:
            records, extra = read_records(entry.checkpoint, spec.trial_id)
            entry.rounds_done = len(records)
            sinks.project(spec, entry, records, extra.get("device", ""))
        item = Planned(spec, entry)
        if item.complete:
            if entry.status != "done":
                sinks.set_status(entry, "done")
        else:
            sinks.set_status(entry, "pending")
        planned.append(item)
    return planned
