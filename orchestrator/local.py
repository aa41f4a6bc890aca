"""Runs a grid's pending trials one after another in this process (no Ray): `albench run --in-process`.

The same ledger, checkpoints and sinks as the Ray orchestrator, so the two can resume each other's work;
useful for debugging and on a machine without Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.errors import DivergedError
from experiments.grid import Grid
from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.inputs import dataset_key, load_datasets, save_splits
from orchestrator.ledger import TrialEntry, write_entry
from orchestrator.plan import Planned, plan
from orchestrator.provenance import device_name
from orchestrator.records import TrialState
from orchestrator.sinks import Sinks
from orchestrator.trial import run_trial, trial_threads
from strategies.scoring_heap import set_scoring_heap

CHECKPOINTS_DIR = "checkpoints"


def run_planned(item: Planned, dataset, results: Path, sinks: Sinks, device: str, report: Callable[[str], None]):
    """Runs one trial from its ledger checkpoint; after every round: checkpoint, ledger, then the sinks."""
    spec, entry = item.spec, item.entry
    state = load_checkpoint(entry.checkpoint, spec.trial_id) if entry.checkpoint else None
    if state is not None:
        report(f"    resuming from its checkpoint after round {state.rounds_done}")
    hardware = device_name(device)
    folder = results / CHECKPOINTS_DIR / spec.trial_id

    def on_round(current: TrialState) -> None:
        current.extra.update(device=hardware, mlflow_run_id=entry.mlflow_run_id or "")
        save_checkpoint(current, folder)
        entry.checkpoint, entry.rounds_done = str(folder.resolve()), current.rounds_done
        write_entry(results, entry)
        sinks.project(spec, entry, current.records, hardware)
        r = current.records[-1]
        report(
            f"    round {r.round + 1}/{entry.n_rounds}: {r.n_labeled} labeled, accuracy "
            f"{r.test_accuracy:.3f} (train {r.train_seconds:.1f} s, query {r.query_seconds:.1f} s)"
        )

    sinks.set_status(entry, "running")
    return run_trial(spec, dataset, device=device, state=state, on_round=on_round)


def run_grid_locally(
    grid: Grid,
    results: str | Path,
    sinks: Sinks,
    *,
    data_root: str | None = None,
    device: str = "cpu",
    report: Callable[[str], None] = print,
    round_progress: bool = True,
) -> list[TrialEntry]:
    """Runs every pending trial; a diverging trial fails alone (its finished rounds stay) and the grid goes on."""
    results = Path(results)
    threads = torch.get_num_threads()
    torch.set_num_threads(trial_threads(grid.resources.cpus_per_trial))  # as a Ray worker of this grid would
    heap = set_scoring_heap(grid.resources.scoring_heap)
    try:
        return _run_all(grid, results, sinks, data_root, device, report, round_progress)
    finally:
        torch.set_num_threads(threads)
        set_scoring_heap(heap)


def _run_all(grid, results, sinks, data_root, device, report, round_progress) -> list[TrialEntry]:
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)
    save_splits(results, datasets)
    planned = plan(specs, results, sinks, report)
    quiet = lambda line: None  # noqa: E731
    for i, item in enumerate(planned, 1):
        prefix = f"[{i}/{len(planned)}] {item.spec.label}"
        if item.complete:
            report(f"{prefix}: complete, skipped")
            continue
        if round_progress:
            report(f"{prefix}: running")
        start = time.perf_counter()
        try:
            state = run_planned(
                item, datasets[dataset_key(item.spec)], results, sinks, device, report if round_progress else quiet
            )
        except DivergedError as error:
            sinks.set_status(item.entry, "failed", str(error))
            report(f"{prefix}: FAILED: {error}")
            continue
        sinks.set_status(item.entry, "done")
        last = state.records[-1]
        report(
            f"{prefix}: {state.rounds_done} rounds, accuracy {last.test_accuracy:.3f} at {last.n_labeled} labels "
            f"({time.perf_counter() - start:.1f} s)"
        )
    return [item.entry for item in planned]
