"""Runs a grid's pending trials on a Ray cluster with Ray Tune, one actor (and placement group) per trial.

Tune cannot add trials to a restored experiment, so every `albench run` starts a fresh Tune run holding only
the trials that still have rounds to do, each resuming from the checkpoint its ledger entry names. Within a
run, Tune retries a failed trial (a killed worker, a lost node) from its latest checkpoint (`--max-failures`).
This module only schedules: its trainable (`train_trial`, at the end) runs `run_trial` in an actor and reports
a checkpoint per round; a Tune callback (`orchestrator.ray_cluster`) hands each event to the bookkeeper.
It never touches the results folder or the tracking store from a worker.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import ray
import torch
from ray import tune

from experiments.datasets import Dataset
from experiments.errors import AlbenchError
from experiments.specs import TrialSpec
from orchestrator.bookkeeper import Bookkeeper
from orchestrator.checkpoint import load_checkpoint, load_fit, write_checkpoint_dir
from orchestrator.cost import trial_work
from orchestrator.gpu import out_of_memory
from orchestrator.grid import Grid
from orchestrator.group import fused_groups
from orchestrator.inputs import dataset_key, inputs_of, load_datasets, save_labels, save_splits
from orchestrator.ledger import TrialEntry
from orchestrator.placement import check_placement, reported_resources, shortfall, trial_bundle
from orchestrator.progress import Progress
from orchestrator.provenance import device_name
from orchestrator.ray_cluster import (
    ALBENCH_ERROR,
    claim_device,
    connect,
    make_callback,
    quiet_raylet,
    run_config,
    tune_settings,
)
from orchestrator.ray_group import group_config, train_group
from orchestrator.ray_round0 import fit_round0_groups
from orchestrator.records import TrialState
from orchestrator.round0 import round0_key
from orchestrator.shards import ShardPool
from orchestrator.trial import run_trial, trial_threads
from strategies.scoring_heap import set_scoring_heap


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
) -> list[TrialEntry]:
    """Runs the pending trials; returns every trial's ledger entry. MLflow, which may lag behind the rows where the
    tracking server is slow, is waited for at the end (`Bookkeeper.settle`). `verbose`: Ray's and Tune's own
    lines on the console too."""
    try:
        with tune_settings(verbose):
            return _run(grid, keeper, address, data_root, max_failures, storage_path, report, set_aside_old, verbose)
    finally:
        keeper.settle(report)


def _run(grid, keeper, address, data_root, max_failures, storage_path, report, set_aside_old, verbose):
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)
    save_splits(keeper.results, datasets)
    save_labels(keeper.results, datasets)
    keeper.carry_over(report, set_aside_old)
    planned = {p.spec.trial_id: p for p in keeper.plan(specs, report, inputs_of(datasets))}
    pending = [p for p in planned.values() if not p.complete]
    # longest first (Tune starts them in this order): the run ends on short trials, not on one long one alone
    pending.sort(
        key=lambda p: trial_work(p.spec, p.entry.rounds_done, datasets[dataset_key(p.spec)].n_train), reverse=True
    )
    report(f"{len(planned) - len(pending)} of {len(planned)} trials already complete; {len(pending)} to run")
    entries = [p.entry for p in planned.values()]
    if not pending:
        return entries
    connect(address, verbose)
    quiet_raylet(verbose)
    cluster = reported_resources(ray.cluster_resources)
    bundle = trial_bundle(grid.resources, cluster, report)
    n_shards = grid.resources.scoring_shards
    # a local instance cannot grow: a trial it can never hold is refused here; a joined cluster may autoscale
    stalled = check_placement(bundle, n_shards, cluster, can_grow=address is not None, report=report)
    used = {dataset_key(p.spec): datasets[dataset_key(p.spec)] for p in pending}
    storage = storage_path or str((keeper.results / "tune").resolve())
    keys = {p.spec.trial_id: round0_key(p.spec) for p in pending}
    pending = fit_round0_groups(grid, keeper, pending, keys, used, bundle, storage, max_failures, report)
    if not pending:
        return entries
    configs = [
        {
            "trial_id": p.spec.trial_id,
            "label": p.spec.label,
            "spec": p.spec.model_dump_json(),
            "dataset_key": dataset_key(p.spec),
            "resume_from": keeper.checkpoint_of(p.entry),
            "round0_key": keys[p.spec.trial_id],
            "round0_from": keeper.round0_fit(keys[p.spec.trial_id]) if p.entry.rounds_done == 0 else None,
            "legacy_id": p.entry.legacy_id,
            "mlflow_run_id": p.entry.mlflow_run_id,
            "scoring_shards": n_shards,
            "scoring_heap": grid.resources.scoring_heap,
            "score_batch_size": grid.resources.score_batch_size,
            "bundle": bundle,
        }
        for p in pending
    ]
    run_one = train_trial
    if grid.resources.fuse > 1:  # one Tune trial per fused group (orchestrator/ray_group.py)
        by_id = {c["trial_id"]: c for c in configs}
        shared = {k: configs[0][k] for k in ("scoring_heap", "score_batch_size", "bundle")}
        groups = fused_groups([p.spec for p in pending], grid.resources.fuse)
        configs = [
            group_config([planned[s.trial_id] for s in g], [by_id[s.trial_id] for s in g], shared) for g in groups
        ]
        report(f"fused: {len(pending)} trials in {len(groups)} groups of up to {grid.resources.fuse}")
        run_one = train_group
    trainable = tune.with_resources(
        tune.with_parameters(run_one, datasets=used), tune.PlacementGroupFactory([bundle] * n_shards)
    )
    waiting = (lambda: shortfall(bundle, n_shards, ray.cluster_resources())) if stalled else None
    progress = Progress(entries, report, waiting=waiting, behind=keeper.mlflow_lag_s)
    callback = make_callback(planned, keeper, progress, report, storage)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,  # a finished trial's actor takes the next one: no new process, no torch import
        ),
        run_config=run_config(grid.name, storage, max_failures, callback),
    )
    try:
        tuner.fit()
    finally:
        keeper.release(pending)  # interrupted before its last round: pending again for the next run
    progress.maybe_print(force=True)
    return entries


def trial_name(trial) -> str:
    """Tune's name of a trial: the albench trial's label, or a fused group's first member's and how many more.
    A module function that reads the trial's own config: Tune stores this function with every trial in its
    experiment snapshot, so it must not hold the grid (a closure over every trial made the snapshot O(N²))."""
    config = trial.config["trial"]
    members = config.get("members") or [config]
    label = members[0]["label"].replace("/", "-")
    return label if len(members) == 1 else f"fused-{label}+{len(members) - 1}"


def trial_dirname(trial) -> str:
    return trial.config["trial"]["trial_id"]


# -- the trainable: one trial in one Ray actor, reporting a checkpoint after every round


def _resume_state(spec: TrialSpec, config: dict) -> TrialState | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Tune is retrying this trial within the current run
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory, spec.trial_id)
    if config.get("resume_from"):  # an earlier run of the grid got this far
        return load_checkpoint(config["resume_from"], spec.trial_id, config.get("legacy_id"))
    return None


def train_trial(config: dict, datasets: dict[str, Dataset]) -> None:
    """config: spec (JSON), dataset_key, resume_from (checkpoint URI or None), legacy_id, mlflow_run_id,
    scoring_shards, scoring_heap, score_batch_size, bundle."""
    config = config.get("trial", config)
    device, started_at = claim_device(config["bundle"]), time.time()  # first: before anything touches CUDA
    spec = TrialSpec.model_validate_json(config["spec"])
    dataset = datasets[config["dataset_key"]]
    torch.set_num_threads(trial_threads(config["bundle"].get("CPU", 1)))
    heap = config.get("scoring_heap", "fast")
    set_scoring_heap(heap)
    hardware = device_name(device)
    placement = {  # where this attempt runs: kept with the state, shown in the ledger
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "started_at": str(started_at),
    }

    def on_round(state: TrialState) -> None:
        state.extra.update(device=hardware, mlflow_run_id=config.get("mlflow_run_id") or "", **placement)
        state.extra["reported_at"] = str(time.time())
        last = state.records[-1]
        metrics = {
            "round": last.round,
            "n_labeled": last.n_labeled,
            "test_accuracy": last.test_accuracy,
            "rounds_done": state.rounds_done,
            "train_seconds": last.train_seconds,
            "eval_seconds": last.eval_seconds,
            "query_seconds": last.query_seconds,
        }
        with tempfile.TemporaryDirectory() as directory:
            write_checkpoint_dir(state, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    n_shards = int(config.get("scoring_shards", 1))
    pool = None
    if n_shards > 1:
        from models.augment import Normalizer

        normalize = Normalizer(dataset.mean, dataset.std)
        pool = ShardPool(spec, dataset.train_images, normalize, dataset.n_classes, n_shards, config["bundle"], heap)
    try:
        state = _resume_state(spec, config)
        round0 = None
        if state is None and config.get("round0_from"):  # its group's one round-0 fit, trained in phase 1
            round0 = load_fit(config["round0_from"], config["round0_key"])
        run_trial(
            spec,
            dataset,
            device=device,
            state=state,
            round0=round0,
            on_round=on_round,
            n_shards=n_shards,
            score_batch_size=config["score_batch_size"],
            map_shards=pool,
        )
    except torch.OutOfMemoryError as error:  # this trial alone fails; its neighbours on the GPU carry on
        share, chunk = config["bundle"].get("GPU", 1.0), config["score_batch_size"]
        message = out_of_memory(error, share, chunk, spec.train.batch_size)
        tune.report({ALBENCH_ERROR: f"{type(message).__name__}: {message}", "rounds_done": -1})
    except AlbenchError as error:  # deterministic (divergence, a corrupt checkpoint): a retry would fail alike
        tune.report({ALBENCH_ERROR: f"{type(error).__name__}: {error}", "rounds_done": -1})
    finally:
        if pool is not None:
            pool.close()
