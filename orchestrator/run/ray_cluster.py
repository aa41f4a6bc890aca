"""The Ray plumbing of `orchestrator.run.ray_runner`: joining the cluster, claiming a worker's device, naming Tune's
checkpoints and errors, and the Tune callback that hands every trial event to the bookkeeper on the driver."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.engine.checkpoint import checkpoint_exists, read_records, remove_checkpoint
from orchestrator.engine.gpu import limit_memory
from orchestrator.plan.jobs import Job
from orchestrator.run.progress import Progress
from orchestrator.store.bookkeeper import FAILED, Bookkeeper, Planned

MEMBER_ERRORS = "albench_member_errors"  # a job's result key: JSON {trial id: error} of members that stopped on an
# error no retry can fix (a diverging trial, a corrupt checkpoint, memory, a failed round-0 fit)


def checkpoint_uri(checkpoint) -> str:
    """A URI for a Tune checkpoint that pyarrow (and so a later run, or another node) can open."""
    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return checkpoint.path
    return f"{checkpoint.filesystem.type_name}://{checkpoint.path}"


def error_text(trial) -> str:
    """A failed trial's error as Tune wrote it. Tune writes the error file on the driver first and copies it to
    the storage later, so the local file is read when the stored one is not there yet."""
    text = None
    with suppress(Exception):
        text = trial.get_error()
    if not text and trial.error_file and Path(trial.error_file).exists():
        text = Path(trial.error_file).read_text()
    return str(text or "")


def error_of(trial) -> str:
    """The last line of a failed trial's error (the exception and its message)."""
    lines = [line.strip() for line in error_text(trial).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def lost_node(node_id: str | None) -> str | None:
    """'node <id> (<ip>)' if the Ray node `node_id` is no longer alive, else None."""
    import ray

    if not node_id:
        return None
    for node in ray.nodes():
        if node["NodeID"] == node_id and not node["Alive"]:
            return f"node {node_id[:12]} ({node.get('NodeManagerAddress', '?')})"
    return None


NODE_DIED = re.compile(r"its node has died\. Node Id: ([0-9a-f]+)")


def cause_of(trial, item: Planned) -> str:
    """Why a trial's attempt ended, in one line: the lost node it ran on, named (from Ray's error, else the last
    node the trial reported from), or its error's last line."""
    died = NODE_DIED.search(error_text(trial))
    node_id = died[1] if died else (item.entry.nodes[-1] if item.entry.nodes else None)
    node = lost_node(node_id) or (f"node {node_id[:12]}" if died else None)
    return f"the {node} it ran on was lost" if node else error_of(trial)


def make_callback(
    jobs: dict[str, Job],
    keeper: Bookkeeper,
    progress: Progress,
    report: Callable[[str], None],
    storage: str,
    release,
):
    """The driver's side of a Tune run of jobs: hands each job's checkpoints and status changes to the bookkeeper,
    and tells `release` (`orchestrator.run.ray_runner.JobRelease`) when a round-0 fit is filed or failed."""
    from ray import tune

    class GridCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            job = jobs[trial.config["job"]]
            if job.kind == "trials":
                for item in job.members:
                    if item.entry.status != FAILED:
                        keeper.start(item)
            progress.maybe_print()

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            job, uri = jobs[trial.config["job"]], checkpoint_uri(checkpoint).rstrip("/")
            if job.kind == "fit":
                keeper.record_round0_fit(job.round0_key, uri, [m.spec.trial_id for m in job.members])
                release.resolve(job.id)
                n = len(job.members)
                report(f"round 0 of group {job.round0_key} ({n} trial{'s' * (n > 1)}) trained once")
                return
            before = tune_checkpoints(keeper, job.members)
            for item in job.members:
                where = f"{uri}/{item.spec.trial_id}"
                if len(job.members) > 1 and not checkpoint_exists(where):  # no round finished yet, or failed
                    continue
                records, extra = read_records(where, item.spec.trial_id)
                keeper.record(item, where, records, extra)
            remove_superseded(before - tune_checkpoints(keeper, job.members), storage)
            progress.maybe_print()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not result.get(MEMBER_ERRORS):
                return
            job, errors = jobs[trial.config["job"]], json.loads(result[MEMBER_ERRORS])
            if job.kind == "fit":
                fit_failed(job, next(iter(errors.values())))
                return
            for item in job.members:
                if item.spec.trial_id in errors and not item.complete and item.entry.status != FAILED:
                    keeper.fail(item, errors[item.spec.trial_id])
                    report(f"{item.spec.label}: FAILED: {item.entry.error}")

        def on_trial_recover(self, iteration, trials, trial, **info):
            job = jobs[trial.config["job"]]
            if job.kind == "fit":
                report(f"{job.label}: {cause_of(trial, job.members[0])}; retrying")
                return
            for item in job.members:
                rounds = item.entry.rounds_done
                report(f"{item.spec.label}: {cause_of(trial, item)}; retrying from round {rounds + 1}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            job = jobs[trial.config["job"]]
            if job.kind == "fit":
                if job.id not in release.resolved:
                    fit_failed(job, "its round-0 fit ended without a result")
                return
            for item in job.members:
                keeper.finish(item)
                report(
                    f"{item.spec.label}: {item.entry.status} ({item.entry.rounds_done}/{item.entry.n_rounds} rounds)"
                )
            progress.maybe_print(force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            job = jobs[trial.config["job"]]
            if job.kind == "fit":
                fit_failed(job, cause_of(trial, job.members[0]))
                return
            for item in job.members:
                if item.complete or item.entry.status == FAILED:
                    keeper.finish(item)  # done before the error, or already failed with its own
                    continue
                keeper.fail(item, cause_of(trial, item))
                report(f"{item.spec.label}: FAILED: {item.entry.error}")
            progress.maybe_print(force=True)

        def on_step_begin(self, iteration, trials, **info):
            progress.maybe_print()

    def fit_failed(job: Job, why: str) -> None:
        """A round-0 fit that failed fails every trial waiting on it; the jobs holding them go on without them."""
        if job.id in release.resolved:
            return
        for item in job.members:
            if item.entry.status != FAILED and not item.complete:
                keeper.fail(item, f"round 0 of its group {job.round0_key}: {why}")
        report(f"round 0 of group {job.round0_key}: FAILED ({why}); its {len(job.members)} trials fail with it")
        release.resolve(job.id)

    return GridCallback()


def connect(address: str | None, verbose: bool = False, py_modules: list[str] | None = None) -> None:
    """Joins the cluster at `address` (else at $RAY_ADDRESS), or starts a Ray instance of its own (no-op if this
    process is connected). Ray alone would join any instance already running on this machine (another run's, a
    test session's), whose nodes are not this run's to use: `--address auto` asks for that. Ray's own lines (its
    start, the workers' output) reach the console with `verbose` only. `py_modules`: code every worker of this run
    imports from (`albench run --ship`)."""
    import ray

    if not ray.is_initialized():
        level = logging.INFO if verbose else logging.ERROR
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        runtime_env = {"py_modules": py_modules} if py_modules else None
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=level,
            log_to_driver=verbose,
            runtime_env=runtime_env,
        )


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


def quiet_raylet(verbose: bool) -> None:
    """Without `verbose`, the raylet's error messages (a dead worker's or node's state dump, tens of lines) stay
    off the console: Ray prints them from a thread of the driver whatever `log_to_driver` says. albench says
    each failure in one line instead (`cause_of`). Ray has no switch for it, so its printer (a private function,
    looked up by that thread at each message) is wrapped; a Ray without it is left as it is."""
    import ray._private.worker as worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None:
        return
    original = getattr(printer, "albench_original", printer)
    if verbose:
        worker.print_to_stdstream = original
        return

    def without_raylet(data, ignore_prefix: bool):
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    without_raylet.albench_original = original
    worker.print_to_stdstream = without_raylet


def run_config(name: str, storage: str, max_failures: int, callback):
    """A Tune run of this grid: retried from the latest checkpoint on a lost worker.

    Tune keeps every checkpoint here (no `num_to_keep`): with one, Tune snapshots the whole experiment (every
    trial's state, O(grid)) at each checkpoint, which made the driver's cost per trial grow with the grid. The
    callback removes each superseded checkpoint itself (`remove_superseded`), so one per trial stays on disk."""
    from ray import tune

    return tune.RunConfig(
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=[callback],
        verbose=0,
    )


@contextmanager
def tune_settings(verbose: bool = False):
    """Tune's switches for an albench run, set in the driver while it runs, each unless the user set it:
    - no experiment snapshot but the first and the last: albench never restores a Tune experiment (each
      `albench run` starts a fresh one from its ledger), so a snapshot buys nothing, and it costs O(grid);
    - Tune's tables off (the progress line is albench's), and failed trials' tracebacks with `verbose` only
      (albench says each failure in one line)."""
    wanted = {"TUNE_GLOBAL_CHECKPOINT_S": "inf", "RAY_AIR_NEW_OUTPUT": "0"}
    if not verbose:
        wanted["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def tune_checkpoints(keeper: Bookkeeper, items: list[Planned]) -> set[str]:
    """The Tune checkpoint folders the ledger entries of `items` point at (a fused member's is its parent)."""
    folders = set()
    for item in items:
        uri = keeper.checkpoint_of(item.entry)
        if uri:
            tail = f"/{item.spec.trial_id}"
            folders.add(uri[: -len(tail)] if uri.rstrip("/").endswith(tail) else uri.rstrip("/"))
    return folders


def remove_superseded(folders: set[str], storage: str) -> None:
    """Removes Tune checkpoint folders no ledger entry points at any more: only Tune's own (checkpoint_NNNNNN)
    under this run's storage, never anything else; a failure to remove leaves a folder, never an error."""
    for folder in folders:
        if CHECKPOINT_NAME.fullmatch(folder.rstrip("/").rsplit("/", 1)[-1]) and _under(folder, storage):
            remove_checkpoint(folder)


CHECKPOINT_NAME = re.compile(r"checkpoint_\d+")


def _under(uri: str, storage: str) -> bool:
    if "://" in uri or "://" in storage:
        return uri.startswith(storage.rstrip("/") + "/") or uri.split("://", 1)[-1].startswith(
            storage.split("://", 1)[-1].rstrip("/") + "/"
        )
    return Path(uri).resolve().is_relative_to(Path(storage).resolve())
