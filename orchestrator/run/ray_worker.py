"""The Ray side of a job: Tune's trainable, in one actor, which reads its typed launch description and calls the
same job body as the in-process backend (`orchestrator.engine.execute`).

Each step's output is one Tune checkpoint: a fit's files, or a folder per member named by its trial id holding
every member's latest state, so a group's checkpoint is written at once with every member at its last round. An
interrupted job (a killed worker, a lost node) is retried by Tune from that checkpoint. The driver's callback
(`orchestrator.run.ray_cluster`) hands each checkpoint to the bookkeeper; no worker touches the results folder or
the tracking store.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from experiments.datasets import Dataset
from orchestrator.engine.checkpoint import load_checkpoint, write_checkpoint_dir, write_fit_dir
from orchestrator.engine.execute import JobOutput, execute, stored_state
from orchestrator.engine.launch import Launch, MemberLaunch
from orchestrator.engine.records import Round0Fit, TrialState
from orchestrator.run.ray_cluster import MEMBER_ERRORS, claim_device
from orchestrator.run.shards import ShardPool

LAUNCH = "launch"  # the Tune config's key of the job's launch description (JSON)


def run_job(config: dict, datasets: dict[str, Dataset]) -> None:
    """Tune's trainable: config holds the job's id, name, bundles and launch description (`tune_config`)."""
    launch = Launch.from_json(config[LAUNCH])
    device, started_at = claim_device(launch.bundle), time.time()  # first: before anything touches CUDA
    dataset = datasets[launch.dataset_key]
    where = {  # where this attempt runs: kept with the state, shown in the ledger
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "started_at": str(started_at),
    }
    if len(launch.members) > 1 and launch.kind == "trials":
        where["fused_group"] = launch.job_id
    pool = None
    if launch.scoring_shards > 1 and launch.kind == "trials":
        from models.augment import Normalizer

        normalize = Normalizer(dataset.mean, dataset.std)
        spec = launch.members[0].spec
        shards, bundle, heap = launch.scoring_shards, launch.bundle, launch.scoring_heap
        pool = ShardPool(spec, dataset.train_images, normalize, dataset.n_classes, shards, bundle, heap)
    try:
        execute(launch, dataset, TuneOutput(), device, where, pool)
    finally:
        if pool is not None:
            pool.close()


def tune_config(job_id: str, name: str, shards: int, launch: Launch) -> dict:
    """What Tune holds of a job: its id and name for the driver, its bundles, its launch description."""
    return {"job": job_id, "name": name, "shards": shards, LAUNCH: launch.to_json()}


class TuneOutput(JobOutput):
    """A job's results as Tune checkpoints and results."""

    def __init__(self) -> None:
        self.latest: dict[str, TrialState] = {}

    def resume(self, member: MemberLaunch) -> TrialState | None:
        """From this job's own Tune checkpoint when Tune retries it, else from an earlier run's (the ledger's)."""
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                folder = Path(directory) / member.trial_id
                state = load_checkpoint(str(folder), member.trial_id) if folder.is_dir() else None
        else:
            state = stored_state(member)
        if state is not None:
            self.latest[member.trial_id] = state
        return state

    def step(self, states: list[TrialState]) -> None:
        self.latest.update({s.trial_id: s for s in states})
        last = states[0].records[-1]
        with tempfile.TemporaryDirectory() as directory:
            for trial_id, state in self.latest.items():  # every member, so that this one checkpoint holds them all
                write_checkpoint_dir(state, Path(directory) / trial_id)
            metrics = {
                "round": last.round,
                "advanced": len(states),
                "test_accuracy": last.test_accuracy,
                "rounds_done": min(s.rounds_done for s in self.latest.values()),
            }
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    def fitted(self, fit: Round0Fit) -> None:
        with tempfile.TemporaryDirectory() as directory:
            write_fit_dir(fit, directory)
            tune.report({"test_accuracy": fit.fit.test_accuracy}, checkpoint=tune.Checkpoint.from_directory(directory))

    def failed(self, errors: dict[str, str]) -> None:
        tune.report({MEMBER_ERRORS: json.dumps(errors), "rounds_done": -1})
