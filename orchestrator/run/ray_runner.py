"""The Ray backend: a grid's plan of jobs as one Ray Tune run, one actor (and placement group) per job.

Tune cannot add trials to a restored experiment, so every `albench run` starts a fresh Tune run holding only the
jobs that still have work, each resuming from the checkpoint its ledger entries name. The jobs enter the run
through a Tune `Searcher` (`JobRelease`) in the plan's order; one that waits on a round-0 fit is held back
(`suggest` returns None) until the driver's callback has filed that fit, so a group's trials start as soon as
their own fit is filed, while other fits still train. Each job asks for its own bundles (`with_resources` with a
function of its config). Within the run, Tune retries a failed job from its latest checkpoint (`--max-failures`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager

import ray
from ray import tune
from ray.tune.search import Searcher

from orchestrator.engine.inputs import dataset_key
from orchestrator.plan.grid import Grid
from orchestrator.plan.jobs import Job, Plan
from orchestrator.run.driver import RunContext, run_grid
from orchestrator.run.placement import check_placement, reported_resources, shortfall, trial_bundle
from orchestrator.run.progress import Progress
from orchestrator.run.ray_cluster import connect, make_callback, quiet_raylet, run_config, tune_settings
from orchestrator.run.ray_worker import run_job, tune_config
from orchestrator.run.ship import shipped_modules
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import TrialEntry


def run_grid_on_ray(
    grid: Grid,
    keeper: Bookkeeper,
    *,
    address: str | None = None,
    data_root: str | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
    report: Callable[[str], None] = print,
    set_aside_old: bool = False,
    verbose: bool = False,
    ship: tuple[str, ...] = (),
) -> list[TrialEntry]:
    """Runs the pending trials; returns every trial's ledger entry. MLflow, which may lag behind the rows where the
    tracking server is slow, is waited for at the end (`Bookkeeper.settle`). `verbose`: Ray's and Tune's own
    lines on the console too. `ship`: plugin package folders sent to every worker (`orchestrator.run.ship`)."""
    try:
        with tune_settings(verbose):
            backend = OnRay(address, max_failures, storage_path, verbose, ship)
            return run_grid(grid, keeper, backend, data_root=data_root, report=report, set_aside_old=set_aside_old)
    finally:
        keeper.settle(report)


class OnRay:
    """Runs a plan as one Tune run on the cluster at `address` (default: a local Ray instance)."""

    def __init__(
        self,
        address: str | None,
        max_failures: int,
        storage_path: str | None,
        verbose: bool,
        ship: tuple[str, ...] = (),
    ) -> None:
        self.address, self.max_failures, self.storage_path, self.verbose = address, max_failures, storage_path, verbose
        self.ship = ship

    def run(self, plan: Plan, context: RunContext) -> None:
        if not plan.jobs:  # nothing to run: no cluster to join
            return
        grid, keeper, report = context.grid, context.keeper, context.report
        modules = shipped_modules(list(self.ship), [m.spec for job in plan.jobs for m in job.members])
        connect(self.address, self.verbose, modules)
        quiet_raylet(self.verbose)
        cluster = reported_resources(ray.cluster_resources)
        bundle = trial_bundle(grid.resources, cluster, report)
        n_shards = grid.resources.scoring_shards
        # a local instance cannot grow: a trial it can never hold is refused here; a joined cluster may autoscale
        stalled = check_placement(bundle, n_shards, cluster, can_grow=self.address is not None, report=report)
        used = {key: context.datasets[key] for key in {dataset_key(j.members[0].spec) for j in plan.jobs}}
        storage = self.storage_path or str((keeper.results / "tune").resolve())
        release = JobRelease(plan.jobs, lambda job: context.launch_of(job, bundle))
        trainable = tune.with_resources(
            tune.with_parameters(run_job, datasets=used),
            lambda config: tune.PlacementGroupFactory([bundle] * config["shards"]),
        )
        waiting = (lambda: shortfall(bundle, n_shards, ray.cluster_resources())) if stalled else None
        progress = Progress(context.entries, report, waiting=waiting, behind=keeper.mlflow_lag_s)
        jobs = {job.id: job for job in plan.jobs}
        callback = make_callback(jobs, keeper, progress, report, storage, release)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=release,
                num_samples=-1,  # as many as the searcher releases, until it says FINISHED
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_dirname,
                reuse_actors=True,  # a finished job's actor takes the next one: no new process, no torch import
            ),
            run_config=run_config(grid.name, storage, self.max_failures, callback),
        )
        with pending_trials(cluster, bundle):
            tuner.fit()
        progress.maybe_print(force=True)


def trial_name(trial) -> str:
    """Tune's name of a job's trial. A module function that reads the trial's own config: Tune stores it with
    every trial in its experiment snapshot, so it must not hold the grid."""
    return trial.config["name"]


def trial_dirname(trial) -> str:
    return trial.config["job"]


class JobRelease(Searcher):
    """Hands Tune the plan's jobs in order, each once the round-0 fits it waits on are filed (or failed: its
    members whose fit failed are left out of its launch). Says FINISHED when every job is released."""

    def __init__(self, jobs: tuple[Job, ...], launch_of: Callable) -> None:
        super().__init__()
        self.waiting = list(jobs)
        self.launch_of = launch_of
        self.resolved: set[str] = set()  # fit jobs that are filed or failed

    def resolve(self, fit_id: str) -> None:
        """The driver's callback: the fit `fit_id` is filed, or it failed."""
        self.resolved.add(fit_id)

    def suggest(self, trial_id: str) -> dict | str | None:
        while ready := next((job for job in self.waiting if self.resolved.issuperset(job.waits_on)), None):
            self.waiting.remove(ready)
            launch = self.launch_of(ready)
            if launch is not None:  # None: every member failed with its round-0 fit; try the next one
                return tune_config(ready.id, tune_name(ready), ready.shards, launch)
        return Searcher.FINISHED if not self.waiting else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn: the callback files every outcome with the bookkeeper."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: albench never restores a Tune experiment (each run re-plans from its ledger)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""


def tune_name(job: Job) -> str:
    """A job's trial name in Tune: the trial's label, 'fused-<first label>+<n>', or 'round0-<key>'."""
    if job.kind == "fit":
        return f"round0-{job.round0_key}"
    label = job.members[0].spec.label.replace("/", "-")
    return label if len(job.members) == 1 else f"fused-{label}+{len(job.members) - 1}"


@contextmanager
def pending_trials(cluster: dict[str, float], bundle: dict[str, float]):
    """How many released jobs Tune may hold waiting for resources: as many as the cluster can run at once, and at
    least 8 (unless the user set TUNE_MAX_PENDING_TRIALS_PG). Tune's default for a custom searcher is 1, which
    starts one job per step of its loop."""
    added = "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    if added:
        at_once = int(cluster.get("CPU", 1) // max(bundle.get("CPU", 1), 1e-9))
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(8, at_once))
    try:
        yield
    finally:
        if added:
            os.environ.pop("TUNE_MAX_PENDING_TRIALS_PG", None)
