"""The Ray plumbing of `orchestrator.ray_runner`: joining the cluster, claiming a worker's device, naming Tune's
checkpoints and errors, and the Tune callback that hands every trial event to the bookkeeper on the driver."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.bookkeeper import Bookkeeper, Planned
from orchestrator.checkpoint import checkpoint_exists, read_records
from orchestrator.gpu import limit_memory
from orchestrator.progress import Progress

ALBENCH_ERROR = "albench_error"  # a result key: the trial stopped on a user error (no retry can fix it)
MEMBER_ERRORS = "albench_member_errors"  # a fused group's result key: JSON {trial id: error} of members that left


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


def make_callback(planned: dict[str, Planned], keeper: Bookkeeper, progress: Progress, report: Callable[[str], None]):
    from ray import tune

    class GridCallback(tune.Callback):
        """Driver-side: hands each trial's checkpoints and status changes to the bookkeeper. A Tune trial is one
        albench trial, or a fused group (`orchestrator.ray_group`) whose checkpoint holds a folder per member."""

        def _items(self, trial) -> list[Planned]:
            config = trial.config["trial"]
            if "members" in config:
                return [planned[m["trial_id"]] for m in config["members"]]
            return [planned[config["trial_id"]]]

        def on_trial_start(self, iteration, trials, trial, **info):
            for item in self._items(trial):
                keeper.start(item)
            progress.maybe_print(force=True)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            uri, fused = checkpoint_uri(checkpoint), "members" in trial.config["trial"]
            for item in self._items(trial):
                where = f"{uri.rstrip('/')}/{item.spec.trial_id}" if fused else uri
                if fused and not checkpoint_exists(where):  # a member that has not finished a round yet
                    continue
                records, extra = read_records(where, item.spec.trial_id)
                keeper.record(item, where, records, extra)
            progress.maybe_print()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(ALBENCH_ERROR):
                keeper.fail(self._items(trial)[0], result[ALBENCH_ERROR])
            if result.get(MEMBER_ERRORS):
                errors = json.loads(result[MEMBER_ERRORS])
                for item in self._items(trial):
                    if item.spec.trial_id in errors and not item.complete:
                        keeper.fail(item, errors[item.spec.trial_id])
                        report(f"{item.spec.label}: FAILED, leaves its fused group: {item.entry.error}")

        def on_trial_recover(self, iteration, trials, trial, **info):
            for item in self._items(trial):
                rounds = item.entry.rounds_done
                report(f"{item.spec.label}: failed ({error_of(trial)}); retrying from round {rounds + 1}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            for item in self._items(trial):
                keeper.finish(item)
                report(
                    f"{item.spec.label}: {item.entry.status} ({item.entry.rounds_done}/{item.entry.n_rounds} rounds)"
                )
            progress.maybe_print(force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            for item in self._items(trial):
                if item.complete or item.entry.status == "failed":
                    keeper.finish(item)  # done before the error, or already failed with its own
                    continue
                keeper.fail(item, error_of(trial))
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


def claim_device(bundle: dict[str, float]) -> str:
    """The device of a trial's (or scoring shard's) worker, called before anything touches CUDA.

    A worker that asked for a GPU gets the one Ray gave it (CUDA_VISIBLE_DEVICES holds only that one), capped to
    its share of the GPU's memory where the grid packs several trials per GPU. A worker that asked for none sees
    none: since 2.60 Ray leaves such workers the node's whole CUDA_VISIBLE_DEVICES, so a CPU trial on a GPU node
    would otherwise put tensors (and a CUDA context) on GPUs other trials own.
    """
    import ray
    import torch

    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    device = "cuda:0"  # CUDA_VISIBLE_DEVICES holds the GPU Ray gave this worker, first
    limit_memory(bundle.get("GPU", 1.0), device)
    return device


def run_config(name: str, storage: str, max_failures: int, callback):
    """A Tune run of this grid: retried from the latest checkpoint on a lost worker, one checkpoint kept."""
    from ray import tune

    return tune.RunConfig(
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[callback],
        verbose=0,
    )
