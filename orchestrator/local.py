"""Runs a grid's pending trials one after another in this process, resuming from checkpoints.

Per trial: skip it if its Parquet file holds every round; else continue from its checkpoint (catching the
Parquet sink up first, so a crash between checkpoint and write loses nothing) and, after every round,
checkpoint, then write the round's row. Rerunning the same command after an interruption finishes only
what is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.datasets import Dataset, load_dataset
from experiments.errors import DivergedError
from experiments.grid import Grid
from experiments.specs import TrialSpec
from orchestrator.checkpoint import load_state, save_state
from orchestrator.provenance import device_name, git_sha
from orchestrator.records import TrialState
from orchestrator.results import rounds_done, rows_of, write_rounds
from orchestrator.trial import check_budget_fits, run_trial

CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class TrialOutcome:
    spec: TrialSpec
    status: str  # 'done' (ran now), 'skipped' (already complete), 'failed' (diverged; see error)
    rounds: int
    seconds: float
    error: str = ""


def checkpoint_path(results: Path, trial_id: str) -> Path:
    return results / CHECKPOINTS_DIR / f"{trial_id}.pt"


def load_datasets(specs: list[TrialSpec], data_root: str | None) -> dict[str, Dataset]:
    """Each distinct dataset once; fails before any trial starts if data is missing or a budget cannot fit."""
    datasets: dict[str, Dataset] = {}
    for spec in specs:
        key = spec.dataset.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(spec.dataset, data_root)
        check_budget_fits(spec, datasets[key])
    return datasets


def save_splits(results: Path, datasets: dict[str, Dataset]) -> None:
    """Stores the file lists of seeded splits with the run, so a result says exactly which images were tested."""
    for key, dataset in datasets.items():
        if dataset.split:
            path = results / "splits" / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"dataset": json.loads(key), **dataset.split}))


def run_one(
    spec: TrialSpec, dataset: Dataset, results: Path, device: str, report: Callable[[str], None] = print
) -> TrialState:
    """Runs or resumes one trial, checkpointing and writing Parquet after every round."""
    path, sha = checkpoint_path(results, spec.trial_id), git_sha()
    state = load_state(path, spec.trial_id) if path.exists() else None
    hardware = device_name(device)
    if state is not None:
        hardware = state.extra.get("device", hardware)
        write_rounds(results, rows_of(spec, state.records, sha, hardware))  # catch the sink up
        report(f"    resuming from its checkpoint after round {state.rounds_done}")

    def on_round(current: TrialState) -> None:
        current.extra.setdefault("device", hardware)
        save_state(current, path)
        write_rounds(results, rows_of(spec, current.records[-1:], sha, hardware))
        r = current.records[-1]
        report(
            f"    round {r.round + 1}/{len(spec.regime.labeled_counts)}: {r.n_labeled} labeled, accuracy "
            f"{r.test_accuracy:.3f} (train {r.train_seconds:.1f} s, query {r.query_seconds:.1f} s)"
        )

    return run_trial(spec, dataset, device=device, state=state, on_round=on_round)


def run_grid_locally(
    grid: Grid,
    results: str | Path,
    *,
    data_root: str | None = None,
    device: str = "cpu",
    report: Callable[[str], None] = print,
    round_progress: bool = True,
) -> list[TrialOutcome]:
    """Runs every pending trial of the grid; a line per trial (and per round with round_progress)."""
    results = Path(results)
    specs = grid.trials()
    datasets = load_datasets(specs, data_root or grid.data_root)
    save_splits(results, datasets)
    outcomes = []
    for i, spec in enumerate(specs, 1):
        n_rounds = len(spec.regime.labeled_counts)
        if rounds_done(results, spec.trial_id) >= n_rounds:
            outcomes.append(TrialOutcome(spec, "skipped", n_rounds, 0.0))
            report(f"[{i}/{len(specs)}] {spec.label}: complete, skipped")
            continue
        start = time.perf_counter()
        try:
            if round_progress:
                report(f"[{i}/{len(specs)}] {spec.label}: running")
            quiet = lambda line: None  # noqa: E731
            dataset = datasets[spec.dataset.model_dump_json()]
            state = run_one(spec, dataset, results, device, report if round_progress else quiet)
        except DivergedError as error:  # this trial's problem alone: its finished rounds stay, the grid goes on
            outcomes.append(TrialOutcome(spec, "failed", rounds_done(results, spec.trial_id), 0.0, str(error)))
            report(f"[{i}/{len(specs)}] {spec.label}: FAILED: {error}")
            continue
        seconds = time.perf_counter() - start
        outcomes.append(TrialOutcome(spec, "done", state.rounds_done, seconds))
        last = state.records[-1]
        report(
            f"[{i}/{len(specs)}] {spec.label}: {state.rounds_done} rounds, "
            f"accuracy {last.test_accuracy:.3f} at {last.n_labeled} labels ({seconds:.1f} s)"
        )
    return outcomes
