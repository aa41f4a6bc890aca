"""The Ray side of fused trials (`resources.fuse`, orchestrator/group.py): one Tune trial per fused group.

A group is one actor with one trial's bundle (a GPU or a share of one). After every step of the group it reports
one Tune checkpoint that holds every member's latest state in a folder named by the member's trial id, so the
group's checkpoint is written at once, every member at the same round: an interrupted group (a killed worker,
a lost node, a stopped run) resumes every member from its last round, and the driver's callback files each
member's rounds under its own id, ledger entry and MLflow run (`orchestrator.ray_cluster`). A member that fails
is reported by id (`MEMBER_ERRORS`) and filed as failed; the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from experiments.datasets import Dataset
from experiments.errors import AlbenchError
from experiments.specs import TrialSpec
from orchestrator.bookkeeper import Planned
from orchestrator.checkpoint import checkpoint_exists, load_checkpoint, load_fit, write_checkpoint_dir
from orchestrator.gpu import out_of_memory
from orchestrator.group import run_group
from orchestrator.inputs import dataset_key
from orchestrator.provenance import device_name
from orchestrator.ray_cluster import MEMBER_ERRORS, claim_device
from orchestrator.records import TrialState
from orchestrator.trial import trial_threads
from strategies.scoring_heap import set_scoring_heap


def group_id(trial_ids: list[str]) -> str:
    """A Tune trial's id for a group: 'fused-' and 12 hex digits of its members' ids (stable across runs)."""
    return "fused-" + hashlib.sha256(",".join(trial_ids).encode()).hexdigest()[:12]


def group_config(members: list[Planned], member_configs: list[dict], shared: dict) -> dict:
    """The Tune config of one group: its id, dataset, each member's own config, and the settings all share."""
    ids = [m.spec.trial_id for m in members]
    return {"trial_id": group_id(ids), "dataset_key": dataset_key(members[0].spec), "members": member_configs, **shared}


def _resume_states(specs: list[TrialSpec], members: list[dict]) -> dict[str, TrialState | None]:
    """Each member's state: from the group's Tune checkpoint when Tune retries the group, else from the checkpoint
    the ledger names (an earlier run), else none."""
    checkpoint, states = tune.get_checkpoint(), {}
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            for spec in specs:
                folder = Path(directory) / spec.trial_id
                states[spec.trial_id] = load_checkpoint(str(folder), spec.trial_id) if folder.is_dir() else None
        return states
    for spec, member in zip(specs, members, strict=True):
        uri = member.get("resume_from")
        found = uri and checkpoint_exists(uri)
        states[spec.trial_id] = load_checkpoint(uri, spec.trial_id, member.get("legacy_id")) if found else None
    return states


def train_group(config: dict, datasets: dict[str, Dataset]) -> None:
    """config: trial_id (the group's), dataset_key, members (each: trial_id, spec, resume_from, legacy_id,
    mlflow_run_id, round0_key, round0_from), scoring_heap, score_batch_size, bundle."""
    config = config.get("trial", config)
    device, started_at = claim_device(config["bundle"]), time.time()  # first: before anything touches CUDA
    members = config["members"]
    specs = [TrialSpec.model_validate_json(m["spec"]) for m in members]
    by_id = {m["trial_id"]: m for m in members}
    dataset = datasets[config["dataset_key"]]
    torch.set_num_threads(trial_threads(config["bundle"].get("CPU", 1)))
    set_scoring_heap(config.get("scoring_heap", "fast"))
    hardware = device_name(device)
    placement = {
        "node": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "started_at": str(started_at),
        "fused_group": config["trial_id"],
    }
    latest: dict[str, TrialState] = {}

    def report_errors(errors: dict[str, str]) -> None:
        tune.report({MEMBER_ERRORS: json.dumps(errors), "rounds_done": -1})

    def on_step(advanced: list[TrialState]) -> None:
        for state in advanced:
            state.extra.update(device=hardware, mlflow_run_id=by_id[state.trial_id].get("mlflow_run_id") or "")
            state.extra.update(placement, reported_at=str(time.time()))
            latest[state.trial_id] = state
        last = advanced[0].records[-1]
        with tempfile.TemporaryDirectory() as directory:
            for trial_id, state in latest.items():  # every member, so that this one checkpoint holds them all
                write_checkpoint_dir(state, Path(directory) / trial_id)
            metrics = {
                "round": last.round,
                "advanced": len(advanced),
                "rounds_done": min(s.rounds_done for s in latest.values()),
            }
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    try:
        states = _resume_states(specs, members)
        latest.update({trial_id: state for trial_id, state in states.items() if state is not None})
        round0s = {
            spec.trial_id: load_fit(m["round0_from"], m["round0_key"])
            if states[spec.trial_id] is None and m.get("round0_from")
            else None
            for spec, m in zip(specs, members, strict=True)
        }
        run_group(
            specs,
            dataset,
            device=device,
            states=states,
            round0s=round0s,
            on_step=on_step,
            on_failed=lambda trial_id, error: report_errors({trial_id: f"{type(error).__name__}: {error}"}),
            score_batch_size=config["score_batch_size"],
        )
    except torch.OutOfMemoryError as error:  # the group fails together; its neighbours on the GPU carry on
        share, chunk = config["bundle"].get("GPU", 1.0), config["score_batch_size"]
        message = out_of_memory(error, share, chunk, specs[0].train.batch_size)
        report_errors({spec.trial_id: f"{type(message).__name__}: {message}" for spec in specs})
    except AlbenchError as error:  # a corrupt checkpoint, a round-0 fit: every member, deterministically
        report_errors({spec.trial_id: f"{type(error).__name__}: {error}" for spec in specs})
