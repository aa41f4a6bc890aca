"""The Parquet sink: RESULTS/rounds/<trial_id>.parquet, one row per (trial, round), written atomically.

Each write re-projects the trial's records (which the checkpoint holds in full) and replaces the trial's
file through a rename, so the sink is idempotent: writing the same rounds again changes nothing, a crash
leaves the previous complete file, and `pandas.read_parquet(RESULTS / "rounds")` reads every trial.
Temporary files start with '.', which Parquet dataset readers skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments.specs import TrialSpec
from orchestrator.records import RoundRecord

ROUNDS_DIR = "rounds"

SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("trial_id", pa.string()),
        ("dataset", pa.string()),
        ("regime", pa.string()),
        ("strategy", pa.string()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("round", pa.int64()),
        ("n_labeled", pa.int64()),
        ("test_accuracy", pa.float64()),
        ("per_class_accuracy", pa.list_(pa.float64())),
        ("train_loss", pa.float64()),
        ("selected", pa.list_(pa.int64())),
        ("train_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("query_seconds", pa.float64()),
        ("initial", pa.int64()),
        ("query", pa.int64()),
        ("subset", pa.int64()),
        ("budget", pa.int64()),
        ("n_rounds", pa.int64()),
        ("precision", pa.string()),
        ("device", pa.string()),
        ("git_sha", pa.string()),
        ("spec", pa.string()),
    ]
)


def rows_of(spec: TrialSpec, records: list[RoundRecord], git_sha: str, device: str) -> list[dict]:
    """One row per record, carrying the spec's identity (and the full resolved spec as JSON)."""
    regime, spec_json = spec.regime, spec.model_dump_json()
    fixed = {
        "experiment": spec.experiment,
        "trial_id": spec.trial_id,
        "dataset": spec.dataset.name,
        "regime": spec.regime_name,
        "strategy": spec.strategy,
        "seed": spec.seed,
        "model": spec.model,
        "initial": regime.initial,
        "query": regime.query,
        "subset": regime.subset,
        "budget": regime.budget,
        "n_rounds": len(regime.labeled_counts),
        "precision": spec.train.precision,
        "device": device,
        "git_sha": git_sha,
        "spec": spec_json,
    }
    return [
        {
            **fixed,
            **r.to_dict(),
            "per_class_accuracy": list(r.per_class_accuracy),
            "selected": list(r.selected),
        }
        for r in records
    ]


def trial_file(results: Path, trial_id: str) -> Path:
    return Path(results) / ROUNDS_DIR / f"{trial_id}.parquet"


def write_rounds(results: str | os.PathLike, rows: list[dict]) -> None:
    """Upserts rows of one trial on (trial_id, round): rows already in its file are replaced, others kept."""
    if not rows:
        return
    path = trial_file(Path(results), rows[0]["trial_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    by_round = {}
    if path.exists():
        for row in pq.read_table(path).to_pylist():
            by_round[row["round"]] = row
    for row in rows:
        by_round[row["round"]] = {name: row.get(name) for name in SCHEMA.names}
    table = pa.Table.from_pylist([by_round[r] for r in sorted(by_round)], schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def rounds_done(results: str | os.PathLike, trial_id: str) -> int:
    """How many rounds of a trial its Parquet file holds (0 if none)."""
    path = trial_file(Path(results), trial_id)
    return pq.read_metadata(path).num_rows if path.exists() else 0


def read_rounds(results: str | os.PathLike) -> pd.DataFrame:
    """Every round of every trial in a results folder (empty frame with the schema's columns if none)."""
    folder = Path(results) / ROUNDS_DIR
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return SCHEMA.empty_table().to_pandas()
    return pd.read_parquet(folder)
