"""Runs a grid's pending trials one after another in this process (no Ray): `albench run --in-process`.

The same ledger, checkpoints and bookkeeper as the Ray orchestrator, so the two can resume each other's work;
useful for debugging and on a machine without Ray.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.errors import AlbenchError
from orchestrator.bookkeeper import Bookkeeper, Planned
from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.gpu import out_of_memory
from orchestrator.grid import Grid
from orchestrator.inputs import dataset_key, inputs_of, load_datasets, save_labels, save_splits
from orchestrator.ledger import TrialEntry
from orchestrator.provenance import device_name
from orchestrator.records import TrialState
from orchestrator.trial import run_trial, trial_threads
from strategies.scoring_heap import set_scoring_heap

CHECKPOINTS_DIR = "checkpoints"


def run_planned(item: Planned, dataset, keeper: Bookkeeper, grid: Grid, device: str, report: Callable[[str], None]):
    """Runs one trial from its ledger checkpoint; after every round: checkpoint, then the bookkeeper."""
    spec, entry = item.spec, item.entry
    previous = keeper.checkpoint_of(entry)
    state = load_checkpoint(previous, spec.trial_id, entry.legacy_id) if previous else None
    if state is not None:
        report(f"    resuming from its checkpoint after round {state.rounds_done}")
    hardware = device_name(device)
    folder = (keeper.results / CHECKPOINTS_DIR / spec.trial_id).resolve()

    def on_round(current: TrialState) -> None:
        nonlocal previous
        current.extra.update(device=hardware, mlflow_run_id=entry.mlflow_run_id or "")
        save_checkpoint(current, folder)
        keeper.record(item, str(folder), current.records, current.extra)
        if previous and Path(previous) != folder and Path(previous).parent == folder.parent:
            shutil.rmtree(previous, ignore_errors=True)  # a carried-over trial's old checkpoint, now superseded
        previous = str(folder)
        r = current.records[-1]
        report(
            f"    round {r.round + 1}/{entry.n_rounds}: {r.n_labeled} labeled, accuracy "
            f"{r.test_accuracy:.3f} (train {r.train_seconds:.1f} s, query {r.query_seconds:.1f} s)"
        )

    keeper.start(item)
    try:
        return run_trial(
            spec,
            dataset,
            device=device,
            state=state,
            on_round=on_round,
            score_batch_size=grid.resources.score_batch_size,
        )
    except torch.OutOfMemoryError as error:  # the trial fails alone; the next one may fit
        raise out_of_memory(error, 1.0, grid.resources.score_batch_size, spec.train.batch_size) from None


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
    """Runs every pending trial; a diverging trial fails alone (its finished rounds stay) and the grid goes on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(trial_threads(grid.resources.cpus_per_trial))  # as a Ray worker of this grid would
    heap = set_scoring_heap(grid.resources.scoring_heap)
    try:
        return _run_all(grid, keeper, data_root, device, report, round_progress, set_aside_old)
    finally:
        torch.set_num_threads(threads)
        set_scoring_heap(heap)


def _run_all(grid, keeper, data_root, device, report, round_progress, set_aside_old) -> list[TrialEntry]:
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)
    save_splits(keeper.results, datasets)
    save_labels(keeper.results, datasets)
    keeper.carry_over(report, set_aside_old)
    planned = keeper.plan(specs, report, inputs_of(datasets))
    quiet = lambda line: None  # noqa: E731
    try:
        for i, item in enumerate(planned, 1):
            prefix = f"[{i}/{len(planned)}] {item.spec.label}"
            if item.complete:
                report(f"{prefix}: complete, skipped")
                continue
            if round_progress:
                report(f"{prefix}: running")
            start = time.perf_counter()
            dataset = datasets[dataset_key(item.spec)]
            try:
                state = run_planned(item, dataset, keeper, grid, device, report if round_progress else quiet)
            except AlbenchError as error:  # deterministic (divergence, a corrupt checkpoint): fails alone
                keeper.fail(item, f"{type(error).__name__}: {error}")
                report(f"{prefix}: FAILED: {error}")
                continue
            keeper.finish(item)
            last = state.records[-1]
            report(
                f"{prefix}: {state.rounds_done} rounds, accuracy {last.test_accuracy:.3f} at {last.n_labeled} labels "
                f"({time.perf_counter() - start:.1f} s)"
            )
    finally:
        keeper.release(planned)  # interrupted (Ctrl-C, an error): nothing stays marked running
    return [item.entry for item in planned]
