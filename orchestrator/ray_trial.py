"""The Tune trainable: one trial in one Ray actor, reporting a checkpoint after every round.

It resumes from Tune's own checkpoint when Tune retries it (a killed worker, a lost node) and otherwise from
the checkpoint the driver's ledger names (an earlier run of the grid). It never touches the results folder
or the tracking store: the driver projects each reported checkpoint into the sinks.
"""

from __future__ import annotations

import os
import tempfile
import time

import ray
import torch
from ray import tune

from experiments.datasets import Dataset
from experiments.errors import AlbenchError
from experiments.specs import TrialSpec
from orchestrator.checkpoint import load_checkpoint, write_checkpoint_dir
from orchestrator.provenance import device_name
from orchestrator.ray_runner import ALBENCH_ERROR
from orchestrator.records import TrialState
from orchestrator.shards import ShardPool, local_device
from orchestrator.trial import run_trial, trial_threads
from strategies.scoring_heap import set_scoring_heap


def _resume_state(spec: TrialSpec, config: dict) -> TrialState | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Tune is retrying this trial within the current run
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory, spec.trial_id)
    if config.get("resume_from"):  # an earlier run of the grid got this far
        return load_checkpoint(config["resume_from"], spec.trial_id)
    return None


def train_trial(config: dict, datasets: dict[str, Dataset]) -> None:
    """config: spec (JSON), dataset_key, resume_from (checkpoint URI or None), mlflow_run_id, scoring_shards,
    scoring_heap, bundle."""
    config = config.get("trial", config)
    spec = TrialSpec.model_validate_json(config["spec"])
    dataset = datasets[config["dataset_key"]]
    torch.set_num_threads(trial_threads(config["bundle"].get("CPU", 1)))
    heap = config.get("scoring_heap", "fast")
    set_scoring_heap(heap)
    device, started_at = local_device(), time.time()
    hardware = device_name(device)
    placement = {  # where this attempt runs: kept with the state, shown in the ledger
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
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
        run_trial(
            spec,
            dataset,
            device=device,
            state=_resume_state(spec, config),
            on_round=on_round,
            n_shards=n_shards,
            **({"map_shards": pool} if pool is not None else {}),
        )
    except AlbenchError as error:  # deterministic (divergence, a corrupt checkpoint): a retry would fail alike
        tune.report({ALBENCH_ERROR: f"{type(error).__name__}: {error}", "rounds_done": -1})
    finally:
        if pool is not None:
            pool.close()
