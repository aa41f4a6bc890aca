"""Runs one job in whatever process it lands in: the one body both backends call (in this process, or in a Ray
actor), so that the worker's prologue, resume, round 0's start, "after each round: checkpoint, then report" and
the handling of out-of-memory and albench errors are each written once.

A backend says where the job's results go by passing a `JobOutput`: the in-process backend stores each step's
checkpoints through the bookkeeper; the Ray backend reports them to Tune as one checkpoint, which the driver's
callback hands to the bookkeeper. A lone trial runs as a fused group of one (`orchestrator.engine.group`), which
computes exactly what `orchestrator.engine.trial.run_trial` computes.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch

from experiments.datasets import Dataset
from experiments.errors import AlbenchError
from experiments.plugins import PluginError
from orchestrator.engine.checkpoint import checkpoint_exists, load_checkpoint, load_fit
from orchestrator.engine.gpu import out_of_memory
from orchestrator.engine.group import run_group
from orchestrator.engine.launch import Launch, MemberLaunch
from orchestrator.engine.provenance import device_name
from orchestrator.engine.query import ShardMapper
from orchestrator.engine.records import Round0Fit, TrialState
from orchestrator.engine.trial import fit_round0, trial_threads
from strategies.scoring_heap import set_scoring_heap


class JobOutput(Protocol):
    """Where a job's results go: the backend's side of `execute`."""

    def resume(self, member: MemberLaunch) -> TrialState | None:
        """The member's state to go on from (a retry's own checkpoint, or an earlier run's), or None."""

    def step(self, states: list[TrialState]) -> None:
        """Members advanced by one round: store their checkpoints, then report them (in this order)."""

    def fitted(self, fit: Round0Fit) -> None:
        """A round-0 group's fit is trained: store it, then report it."""

    def failed(self, errors: dict[str, str]) -> None:
        """Members that stop with an error no retry can fix (trial id -> the error, in one line)."""


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def execute(
    launch: Launch,
    dataset: Dataset,
    output: JobOutput,
    device: str,
    where: dict[str, str] | None = None,
    map_shards: ShardMapper | None = None,
) -> None:
    """Runs `launch` on `device` (claimed by the caller: a GPU before anything touches CUDA) to its end. `where`:
    the attempt's placement (node, GPU ids), kept with every checkpoint. Errors that no retry can fix end at
    `output.failed`; anything else (a killed worker, a lost node) propagates, and the backend retries."""
    torch.set_num_threads(trial_threads(launch.bundle.get("CPU", 1)))
    set_scoring_heap(launch.scoring_heap)
    everyone = [m.trial_id for m in launch.members]
    try:
        if launch.kind == "fit":
            output.fitted(fit_round0(launch.members[0].spec, dataset, launch.round0_key, device))
        else:
            _run_trials(launch, dataset, output, device, where or {}, map_shards)
    except torch.OutOfMemoryError as error:  # the job fails together; its neighbours on the GPU carry on
        share, spec = launch.bundle.get("GPU", 1.0), launch.members[0].spec
        message = describe(out_of_memory(error, share, launch.score_batch_size, spec.train.batch_size))
        output.failed(dict.fromkeys(everyone, message))
    except PluginError as error:  # this worker's node lacks the plugin, or has another version: so will a retry
        node = (where or {}).get("node")
        output.failed(dict.fromkeys(everyone, describe(error) + (f" (Ray node {node[:12]})" if node else "")))
    except AlbenchError as error:  # deterministic (a corrupt checkpoint, a diverging fit): a retry fails alike
        output.failed(dict.fromkeys(everyone, describe(error)))


def _run_trials(
    launch: Launch, dataset: Dataset, output: JobOutput, device: str, where: dict[str, str], map_shards
) -> None:
    by_id = {m.trial_id: m for m in launch.members}
    states = {m.trial_id: output.resume(m) for m in launch.members}
    round0s = {
        m.trial_id: load_fit(m.round0_from, m.round0_key) if states[m.trial_id] is None and m.round0_from else None
        for m in launch.members
    }
    hardware = device_name(device)

    def on_step(advanced: list[TrialState]) -> None:
        for state in advanced:
            run_id = by_id[state.trial_id].mlflow_run_id or ""
            state.extra.update(device=hardware, mlflow_run_id=run_id, **where, reported_at=str(time.time()))
        output.step(advanced)

    run_group(
        [m.spec for m in launch.members],
        dataset,
        device=device,
        states=states,
        round0s=round0s,
        on_step=on_step,
        on_failed=lambda trial_id, error: output.failed({trial_id: describe(error)}),
        n_shards=launch.scoring_shards,
        map_shards=map_shards,
        score_batch_size=launch.score_batch_size,
    )


def stored_state(member: MemberLaunch) -> TrialState | None:
    """The member's state from the checkpoint an earlier run left, where there is one."""
    uri = member.resume_from
    if uri and checkpoint_exists(uri):
        return load_checkpoint(uri, member.trial_id, member.legacy_id)
    return None
