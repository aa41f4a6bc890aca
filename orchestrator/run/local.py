"""The in-process backend: a grid's jobs one after another in this process, no Ray (`albench run --in-process`).

The same plan, job body (`orchestrator.engine.execute`) and bookkeeper as the Ray backend, so the two resume each
other's work; useful for debugging and on a machine without Ray. Its checkpoints go to RESULTS/checkpoints/ through
the bookkeeper.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from orchestrator.engine.execute import JobOutput, execute, stored_state
from orchestrator.engine.launch import MemberLaunch
from orchestrator.engine.records import Round0Fit, TrialState
from orchestrator.plan.grid import Grid
from orchestrator.plan.jobs import Job, Plan
from orchestrator.run.driver import RunContext, run_grid
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import TrialEntry
from strategies.scoring_heap import set_scoring_heap


def run_grid_locally(
    grid: Grid,
    keeper: Bookkeeper,
    *,
    data_root: str | None = None,
    device: str = "cpu",
    report: Callable[[str], None] = print,
    round_progress: bool = True,
    set_aside_old: bool = False,
) -> list[TrialEntry]:
    """Runs every pending trial; a diverging trial fails alone (its finished rounds stay) and the grid goes on.
    MLflow, which may lag behind the rows where the tracking server is slow, is waited for at the end."""
    try:
        backend = InProcess(device, round_progress)
        return run_grid(grid, keeper, backend, data_root=data_root, report=report, set_aside_old=set_aside_old)
    finally:
        keeper.settle(report)


class InProcess:
    """Runs the plan's jobs in their order, in this process, on `device`."""

    def __init__(self, device: str = "cpu", round_progress: bool = True) -> None:
        self.device, self.round_progress = device, round_progress

    def run(self, plan: Plan, context: RunContext) -> None:
        threads, heap = torch.get_num_threads(), set_scoring_heap(context.grid.resources.scoring_heap)
        for item in plan.complete:
            context.report(f"{item.spec.label}: complete, skipped")
        try:
            for i, job in enumerate(plan.jobs, 1):
                self._run_job(job, f"[{i}/{len(plan.jobs)}] {job.label}", context)
        finally:  # execute sets both as the job's worker would; this process goes back to its own
            torch.set_num_threads(threads)
            set_scoring_heap(heap)

    def _run_job(self, job: Job, prefix: str, context: RunContext) -> None:
        keeper, report = context.keeper, context.report
        launch = context.launch_of(job, {"CPU": context.grid.resources.cpus_per_trial}, scoring_shards=1)
        if launch is None:  # every member failed with its round-0 fit
            return
        live = [m for m in job.members if any(x.trial_id == m.spec.trial_id for x in launch.members)]
        if self.round_progress or len(live) > 1:
            report(f"{prefix}: running")
        start = time.perf_counter()
        if job.kind == "trials":
            for item in live:
                keeper.start(item)
        quiet = (lambda line: None) if not self.round_progress else report  # noqa: E731
        output = LocalOutput(keeper, job, report, quiet)
        execute(launch, context.datasets[launch.dataset_key], output, self.device)
        if job.kind == "fit":
            return
        for item in live:
            keeper.finish(item)
            entry = item.entry
            if entry.status == "done":
                records = output.last.get(entry.trial_id)
                accuracy = f", accuracy {records.test_accuracy:.3f} at {records.n_labeled} labels" if records else ""
                report(
                    f"{prefix if len(live) == 1 else '  ' + item.spec.label}: {entry.rounds_done} rounds{accuracy} "
                    f"({time.perf_counter() - start:.1f} s)"
                )


class LocalOutput(JobOutput):
    """A job's results in this process: each step's checkpoints stored and filed by the bookkeeper at once."""

    def __init__(self, keeper: Bookkeeper, job: Job, report: Callable[[str], None], rounds: Callable[[str], None]):
        self.keeper, self.job, self.report, self.rounds = keeper, job, report, rounds
        self.items = {m.spec.trial_id: m for m in job.members}
        self.last = {}  # trial id -> its latest round's record
        self.start = time.perf_counter()

    def resume(self, member: MemberLaunch) -> TrialState | None:
        state = stored_state(member)
        if state is not None:
            self.rounds(f"    {member.spec.label}: resuming from its checkpoint after round {state.rounds_done}")
        return state

    def step(self, states: list[TrialState]) -> None:
        for state in states:
            self.keeper.store_state(self.items[state.trial_id], state)
            self.last[state.trial_id] = state.records[-1]
        r, n_rounds = states[0].records[-1], self.items[states[0].trial_id].entry.n_rounds
        if len(self.job.members) == 1:
            self.rounds(
                f"    round {r.round + 1}/{n_rounds}: {r.n_labeled} labeled, accuracy {r.test_accuracy:.3f} "
                f"(train {r.train_seconds:.1f} s, query {r.query_seconds:.1f} s)"
            )
            return
        how = f"fused {r.fused_with}" if r.fused_with else "from round-0 fits" if r.round0_group else "alone"
        accuracies = ", ".join(f"{s.records[-1].test_accuracy:.3f}" for s in states)
        self.rounds(f"    round {r.round + 1}/{n_rounds}: {len(states)} trained {how}, accuracy {accuracies}")

    def fitted(self, fit: Round0Fit) -> None:
        self.keeper.store_fit(fit, list(self.items))
        n = len(self.items)
        self.report(
            f"    round 0 of group {fit.key} ({n} trial{'s' * (n > 1)}) trained once: accuracy "
            f"{fit.fit.test_accuracy:.3f} ({time.perf_counter() - self.start:.1f} s)"
        )

    def failed(self, errors: dict[str, str]) -> None:
        for trial_id, error in errors.items():
            item = self.items[trial_id]
            if item.entry.status == "failed" or item.complete:
                continue
            if self.job.kind == "fit":
                self.keeper.fail(item, f"round 0 of its group {self.job.round0_key}: {error}")
            else:
                self.keeper.fail(item, error)
            self.report(f"{item.spec.label}: FAILED: {item.entry.error}")
