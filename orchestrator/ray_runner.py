"""Runs a grid's pending trials on a Ray cluster with Ray Tune, one actor (and placement group) per trial.

Tune cannot add trials to a restored experiment, so every `albench run` starts a fresh Tune run holding only
the trials that still have rounds to do, each resuming from the checkpoint its ledger entry names. Within a
run, Tune retries a failed trial (a killed worker, a lost node) from its latest checkpoint (`--max-failures`).
The driver writes every sink, from the callback below, as each checkpoint is persisted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from experiments.cost import trial_work
from experiments.errors import ConfigError
from experiments.grid import Grid, ResourcesSpec
from orchestrator.checkpoint import read_records
from orchestrator.inputs import dataset_key, load_datasets, save_splits
from orchestrator.ledger import TrialEntry, write_entry
from orchestrator.plan import Planned, plan
from orchestrator.progress import Progress
from orchestrator.sinks import Sinks

ALBENCH_ERROR = "albench_error"  # a result key: the trial stopped on a user error (no retry can fix it)


def checkpoint_uri(checkpoint) -> str:
    """A URI for a Tune checkpoint that pyarrow (and so a later run, or another node) can open."""
    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return checkpoint.path
    return f"{checkpoint.filesystem.type_name}://{checkpoint.path}"


def error_of(trial) -> str:
    """The last line of a failed trial's error (the exception and its message)."""
    try:
        text = str(trial.get_error())
    except Exception:
        text = Path(trial.error_file).read_text() if trial.error_file else "unknown error"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def make_callback(planned: dict[str, Planned], sinks: Sinks, progress: Progress, report: Callable[[str], None]):
    from ray import tune

    class GridCallback(tune.Callback):
        """Driver-side: ledger, Parquet and MLflow follow each trial's checkpoints and status changes."""

        def _item(self, trial) -> Planned:
            return planned[trial.config["trial"]["trial_id"]]

        def on_trial_start(self, iteration, trials, trial, **info):
            sinks.set_status(self._item(trial).entry, "running")
            progress.maybe_print(force=True)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            item = self._item(trial)
            uri = checkpoint_uri(checkpoint)
            records, extra = read_records(uri, item.spec.trial_id)
            item.entry.checkpoint, item.entry.rounds_done = uri, len(records)
            if extra.get("node") and extra["node"] not in item.entry.nodes[-1:]:
                item.entry.nodes.append(extra["node"])
            write_entry(sinks.results, item.entry)
            sinks.project(item.spec, item.entry, records, extra.get("device", ""))
            progress.maybe_print()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(ALBENCH_ERROR):
                sinks.set_status(self._item(trial).entry, "failed", result[ALBENCH_ERROR])

        def on_trial_recover(self, iteration, trials, trial, **info):
            item = self._item(trial)
            report(f"{item.spec.label}: failed ({error_of(trial)}); retrying from round {item.entry.rounds_done + 1}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            item = self._item(trial)
            if item.entry.status != "failed":
                sinks.set_status(item.entry, "done" if item.complete else "pending")
            report(f"{item.spec.label}: {item.entry.status} ({item.entry.rounds_done}/{item.entry.n_rounds} rounds)")
            progress.maybe_print(force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            item = self._item(trial)
            sinks.set_status(item.entry, "failed", error_of(trial))
            report(f"{item.spec.label}: FAILED: {item.entry.error}")
            progress.maybe_print(force=True)

        def on_step_begin(self, iteration, trials, **info):
            progress.maybe_print()

    return GridCallback()


def connect(address: str | None) -> None:
    """Joins the cluster at `address`, or starts a local Ray instance (no-op if this process is connected)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def trial_bundle(resources: ResourcesSpec) -> dict[str, float]:
    """One bundle: a GPU per trial where the cluster has GPUs (as the grid asks), else CPUs only."""
    import ray

    cluster = ray.cluster_resources()
    if resources.cpus_per_trial > cluster.get("CPU", 0):
        raise ConfigError(
            f"resources.cpus_per_trial = {resources.cpus_per_trial} but the cluster has {cluster.get('CPU', 0)} CPUs; "
            "lower it in the grid"
        )
    bundle = {"CPU": resources.cpus_per_trial}
    if cluster.get("GPU", 0) > 0 and resources.gpus_per_trial > 0:
        bundle["GPU"] = resources.gpus_per_trial
    return bundle


def run_grid_on_ray(
    grid: Grid,
    results: str | Path,
    sinks: Sinks,
    *,
    address: str | None = None,
    data_root: str | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
    report: Callable[[str], None] = print,
) -> list[TrialEntry]:
    from ray import tune

    from orchestrator.ray_trial import train_trial

    results = Path(results)
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)
    save_splits(results, datasets)
    planned = {p.spec.trial_id: p for p in plan(specs, results, sinks, report)}
    pending = [p for p in planned.values() if not p.complete]
    # longest first (Tune starts them in this order): the run ends on short trials, not on one long one alone
    pending.sort(
        key=lambda p: trial_work(p.spec, p.entry.rounds_done, datasets[dataset_key(p.spec)].n_train), reverse=True
    )
    report(f"{len(planned) - len(pending)} of {len(planned)} trials already complete; {len(pending)} to run")
    entries = [p.entry for p in planned.values()]
    if not pending:
        return entries
    connect(address)
    bundle = trial_bundle(grid.resources)
    n_shards = grid.resources.scoring_shards
    used = {dataset_key(p.spec): datasets[dataset_key(p.spec)] for p in pending}
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, datasets=used), tune.PlacementGroupFactory([bundle] * n_shards)
    )
    configs = [
        {
            "trial_id": p.spec.trial_id,
            "spec": p.spec.model_dump_json(),
            "dataset_key": dataset_key(p.spec),
            "resume_from": p.entry.checkpoint,
            "mlflow_run_id": p.entry.mlflow_run_id,
            "scoring_shards": n_shards,
            "scoring_heap": grid.resources.scoring_heap,
            "bundle": bundle,
        }
        for p in pending
    ]
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables; the progress line is ours
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # one save per round
    storage = storage_path or str((results / "tune").resolve())
    progress = Progress(entries, report)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda t: planned[t.config["trial"]["trial_id"]].spec.label.replace("/", "-"),
            trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
            reuse_actors=True,  # a finished trial's actor takes the next one: no new process, no torch import
        ),
        run_config=tune.RunConfig(
            name=f"{grid.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[make_callback(planned, sinks, progress, report)],
            verbose=0,
        ),
    )
    tuner.fit()
    for p in pending:  # interrupted before its last round: pending again for the next run
        if p.entry.status == "running":
            sinks.set_status(p.entry, "pending")
    progress.maybe_print(force=True)
    return entries
