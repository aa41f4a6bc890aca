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
from orchestrator.group import fused_groups, run_group
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


def run_planned_group(
    items: list[Planned],
    dataset,
    keeper: Bookkeeper,
    grid: Grid,
    device: str,
    report: Callable[[str], None],
    round0s: dict[str, Round0Fit | None],
) -> dict[str, TrialState]:
    """Runs a fused group (`resources.fuse`, orchestrator/group.py), each member from its ledger checkpoint; after
    every step of the group: each advanced member's checkpoint, then the bookkeeper. A member that fails is filed
    as failed at once; the others go on."""
    by_id = {item.spec.trial_id: item for item in items}
    states = {}
    for item in items:
        previous = keeper.checkpoint_of(item.entry)
        states[item.spec.trial_id] = (
            load_checkpoint(previous, item.spec.trial_id, item.entry.legacy_id) if previous else None
        )
    hardware = device_name(device)

    def on_step(advanced: list[TrialState]) -> None:
        for current in advanced:
            item = by_id[current.trial_id]
            current.extra.update(device=hardware, mlflow_run_id=item.entry.mlflow_run_id or "")
            folder = (keeper.results / CHECKPOINTS_DIR / current.trial_id).resolve()
            save_checkpoint(current, folder)
            keeper.record(item, str(folder), current.records, current.extra)
        r = advanced[0].records[-1]
        how = f"fused {r.fused_with}" if r.fused_with else "from round-0 fits" if r.round0_group else "alone"
        accuracies = ", ".join(f"{s.records[-1].test_accuracy:.3f}" for s in advanced)
        report(
            f"    round {r.round + 1}/{items[0].entry.n_rounds}: {len(advanced)} trained {how}, accuracy {accuracies}"
        )

    def on_failed(trial_id: str, error: AlbenchError) -> None:
        keeper.fail(by_id[trial_id], f"{type(error).__name__}: {error}")
        report(f"    {by_id[trial_id].spec.label}: FAILED, leaves its group: {error}")

    for item in items:
        keeper.start(item)
    try:
        return run_group(
            [item.spec for item in items],
            dataset,
            device=device,
            states=states,
            round0s=round0s,
            on_step=on_step,
            on_failed=on_failed,
            score_batch_size=grid.resources.score_batch_size,
        )
    except torch.OutOfMemoryError as error:  # the group fails together; the next one may fit
        spec = items[0].spec
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
        keeper.settle(report)  # MLflow, which lags behind the rows where the server is slow, catches up


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
        if grid.resources.fuse > 1:
            _run_fused(planned, grid, datasets, keeper, device, fits, report)
            return [item.entry for item in planned]
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


def _run_fused(planned: list[Planned], grid: Grid, datasets, keeper: Bookkeeper, device: str, fits, report) -> None:
    """The pending trials in fused groups of up to `resources.fuse`, one group after another."""
    pending = {item.spec.trial_id: item for item in planned if not item.complete}
    report(f"{len(planned) - len(pending)} of {len(planned)} trials already complete")
    groups = fused_groups([item.spec for item in pending.values()], grid.resources.fuse)
    for i, specs in enumerate(groups, 1):
        items = [pending[spec.trial_id] for spec in specs]
        report(f"[group {i}/{len(groups)}] {' + '.join(item.spec.label for item in items)}: running")
        start = time.perf_counter()
        try:
            round0s = {
                item.spec.trial_id: fits.of(item.spec) if item.entry.rounds_done == 0 else None for item in items
            }
            dataset = datasets[dataset_key(specs[0])]
            run_planned_group(items, dataset, keeper, grid, device, report, round0s)
        except AlbenchError as error:  # the whole group: a round-0 fit, a checkpoint, memory
            for item in items:
                if item.entry.status != "failed":
                    keeper.fail(item, f"{type(error).__name__}: {error}")
            report(f"[group {i}/{len(groups)}]: FAILED: {error}")
            continue
        for item in items:
            keeper.finish(item)
        report(f"[group {i}/{len(groups)}]: done ({time.perf_counter() - start:.1f} s)")


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
