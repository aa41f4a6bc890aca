"""Carrying over the trials of albench <= 17506af: the bookkeeper's part of an upgrade (`orchestrator.store.upgrade`
translates; these methods file). A mixin of `Bookkeeper`, so the results folder keeps one writer."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from experiments.results import spec_columns, trial_file, write_rounds
from experiments.specs import SPEC_VERSION, TrialSpec
from orchestrator.store.ledger import TrialEntry, TrialStatus, entry_path, remove_entry, write_entry
from orchestrator.store.upgrade import SET_ASIDE_DIR, UpgradeError, cannot_carry_over, find_v0_trials, rounds_of


class CarryOver:
    """The carry-over methods of `Bookkeeper` (which provides results, tracker, located and stored)."""

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
        status = TrialStatus(old.get("status", TrialStatus.PENDING))  # the next plan sets a RUNNING one PENDING
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

    def _remove_files(self, trial_id: str) -> None:
        trial_file(self.results, trial_id).unlink(missing_ok=True)
        remove_entry(self.results, trial_id)
