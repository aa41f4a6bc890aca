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
from experiments.specs import TrialSpec
from orchestrator.bookkeeper import Bookkeeper, Planned
from orchestrator.checkpoint import load_checkpoint, load_fit, save_checkpoint, save_fit
from orchestrator.gpu import out_of_memory
from orchestrator.grid import Grid
from orchestrator.inputs import dataset_key, inputs_of, load_datasets, save_labels, save_splits
from orchestrator.ledger import TrialEntry
from orchestrator.provenance import device_name
from orchestrator.records import Round0Fit, TrialState
from orchestrator.round0 import round0_groups, round0_key
from orchestrator.trial import fit_round0, run_trial, trial_threads
from strategies.scoring_heap import set_scoring_heap

CHECKPOINTS_DIR = "checkpoints"
ROUND0_DIR = "round0"  # CHECKPOINTS_DIR/round0/<key>: the round-0 fits of the groups


def run_planned(
    item: Planned,
    dataset,
    keeper: Bookkeeper,
    grid: Grid,
    device: str,
    report: Callable[[str], None],
    round0: Round0Fit | None = None,
):
    """Runs one trial from its ledger checkpoint (or from its group's round-0 fit); after every round: checkpoint,
    then the bookkeeper."""
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
            round0=round0,
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
    fits = Round0Fits(keeper, round0_groups(specs), datasets, device, report)
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
                round0 = fits.of(item.spec) if item.entry.rounds_done == 0 else None
                state = run_planned(item, dataset, keeper, grid, device, report if round_progress else quiet, round0)
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


class Round0Fits:
    """Each round-0 group's one fit, trained when its first member needs it, then read by every member (and by
    later runs of the grid) from RESULTS/checkpoints/round0/<key>. A fit that fails fails every member alike."""

    def __init__(self, keeper: Bookkeeper, groups: dict[str, list[TrialSpec]], datasets, device: str, report) -> None:
        self.keeper, self.groups, self.datasets, self.device, self.report = keeper, groups, datasets, device, report
        self.failed: dict[str, AlbenchError] = {}

    def of(self, spec: TrialSpec) -> Round0Fit:
        key = round0_key(spec)
        if key in self.failed:
            raise self.failed[key]
        uri = self.keeper.round0_fit(key)
        if uri is not None:
            return load_fit(uri, key)
        members = self.groups[key]
        start = time.perf_counter()
        try:
            fit = fit_round0(spec, self.datasets[dataset_key(spec)], key, self.device)
        except AlbenchError as error:
            self.failed[key] = error
            raise
        folder = (self.keeper.results / CHECKPOINTS_DIR / ROUND0_DIR / key).resolve()
        save_fit(fit, folder)
        self.keeper.record_round0_fit(key, str(folder), [s.trial_id for s in members])
        trials = f"{len(members)} trial{'s' * (len(members) > 1)}"
        self.report(
            f"    round 0 of group {key} ({trials}) trained once: accuracy {fit.fit.test_accuracy:.3f} "
            f"({time.perf_counter() - start:.1f} s)"
        )
        return fit
