"""A grid's run, written once for both backends: load the data, catch the ledger up, build the plan of jobs, hand
it to a backend, and leave nothing marked running.

A backend (`InProcess` in `orchestrator.run.local`, `OnRay` in `orchestrator.run.ray_runner`) only decides where
and when each job runs; what a job computes is `orchestrator.engine.execute`, and where its results go is the
bookkeeper, the one writer of the results folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from experiments.datasets import Dataset
from orchestrator.engine.inputs import dataset_key, inputs_of, load_datasets
from orchestrator.engine.launch import Launch, MemberLaunch
from orchestrator.engine.round0 import round0_key
from orchestrator.plan.grid import Grid
from orchestrator.plan.jobs import Job, Plan, build_plan
from orchestrator.store.bookkeeper import FAILED, Bookkeeper
from orchestrator.store.ledger import TrialEntry


@dataclass
class RunContext:
    """What every backend is handed with the plan."""

    grid: Grid
    keeper: Bookkeeper
    datasets: dict[str, Dataset]
    entries: list[TrialEntry]  # every trial of the grid (the progress line counts them)
    report: Callable[[str], None]

    def launch_of(self, job: Job, bundle: dict[str, float], scoring_shards: int | None = None) -> Launch | None:
        """The job's launch description at its release: each member with the checkpoint it resumes from and the
        round-0 fit it starts from (filed by now). Members that failed meanwhile (their round-0 fit failed) are
        left out; None where none is left."""
        resources = self.grid.resources
        members = [m for m in job.members if job.kind == "fit" or m.entry.status != FAILED]
        if not members:
            return None
        return Launch(
            job_id=job.id,
            kind=job.kind,
            members=tuple(self._member(m.spec, m.entry) for m in members),
            dataset_key=dataset_key(members[0].spec),
            bundle=bundle,
            scoring_shards=job.shards if scoring_shards is None else scoring_shards,
            scoring_heap=resources.scoring_heap,
            score_batch_size=resources.score_batch_size,
        )

    def _member(self, spec, entry: TrialEntry) -> MemberLaunch:
        key = round0_key(spec)
        return MemberLaunch(
            spec=spec,
            resume_from=self.keeper.checkpoint_of(entry),
            legacy_id=entry.legacy_id,
            mlflow_run_id=entry.mlflow_run_id,
            round0_key=key,
            round0_from=self.keeper.round0_fit(key) if entry.rounds_done == 0 else None,
        )


class Backend(Protocol):
    def run(self, plan: Plan, context: RunContext) -> None:
        """Runs every job of `plan` (each after the fits it waits on), filing each event with the bookkeeper; called
        also with no job left (a finished grid), to say so its own way."""


def run_grid(
    grid: Grid,
    keeper: Bookkeeper,
    backend: Backend,
    *,
    data_root: str | None = None,
    report: Callable[[str], None] = print,
    set_aside_old: bool = False,
) -> list[TrialEntry]:
    """Runs the grid's unfinished trials on `backend`; returns every trial's ledger entry."""
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)  # a missing dataset stops everything first
    keeper.save_inputs(datasets)
    keeper.carry_over(report, set_aside_old)
    planned = keeper.plan(specs, report, inputs_of(datasets))
    filed = lambda key: keeper.round0_fit(key) is not None  # noqa: E731
    plan = build_plan(planned, grid, filed, {key: d.n_train for key, d in datasets.items()})
    pending = plan.pending()
    fits = f", after {len(plan.fits)} round-0 fits" if plan.fits else ""
    report(f"{len(plan.complete)} of {len(planned)} trials already complete; {len(pending)} to run{fits}")
    entries = [p.entry for p in planned]
    try:
        backend.run(plan, RunContext(grid, keeper, datasets, entries, report))
    finally:
        keeper.release(pending)  # interrupted (Ctrl-C, an error): nothing stays marked running
    return entries
