"""The Parquet layout of a results folder: RESULTS/rounds/<trial_id>.parquet, one row per (trial, round).

A round's record becomes a row with its trial's spec columns (`rows_of`), upserted atomically per trial
(`write_rounds`, called by `orchestrator.store.bookkeeper` alone): writing the same rounds again changes nothing and a
crash leaves the previous complete file. Every reader (reports, `albench table`, users' pandas) shares it:
`pandas.read_parquet(RESULTS / "rounds")` reads every trial; temporary files start with '.', which Parquet
dataset readers skip.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from experiments.records import RoundRecord
from experiments.specs import SPEC_VERSION, TrialSpec

ROUNDS_DIR = "rounds"

SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("trial_id", pa.string()),
        ("dataset", pa.string()),
        ("regime", pa.string()),
        ("strategy", pa.string()),  # the variant's label, e.g. 'bait(lam=0.01)'; the plain name at default settings
        ("strategy_name", pa.string()),  # the registered name, e.g. 'bait'
        ("seed", pa.int64()),
        ("model", pa.string()),
        # the plugins the trial uses: 'model: albench-bald 0.1.0; strategy: albench-bald 0.1.0'; null for albench's own
        ("plugins", pa.string()),
        ("round", pa.int64()),
        ("n_labeled", pa.int64()),
        ("test_accuracy", pa.float64()),
        ("per_class_accuracy", pa.list_(pa.float64())),
        ("train_accuracy", pa.float64()),  # on the labeled set after the round's training; null before it was kept
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
        ("deterministic", pa.bool_()),  # train.deterministic: torch's deterministic algorithms (GPU); null before
        ("device", pa.string()),
        ("gpu_peak_allocated_mib", pa.float64()),  # the trial's own GPU during the round; null on a CPU
        ("gpu_peak_reserved_mib", pa.float64()),
        ("gpu_utilization", pa.float64()),  # mean % over the round (NVML); null on a CPU or without NVML
        # round 0: the round-0 group whose one fit the trial started from (orchestrator/engine/round0.py); null where
        # the trial trained its round 0 itself (before round-0 groups) and in later rounds
        ("round0_group", pa.string()),
        # the members of the round's fused fit, itself included (orchestrator/engine/group.py); null: trained alone
        ("fused_with", pa.int64()),
        ("mps", pa.bool_()),  # NVIDIA MPS served the trial's GPU; null on a CPU
        ("git_sha", pa.string()),
        ("spec_version", pa.int64()),
        ("spec", pa.string()),
    ]
)


LABELS_DIR = "labels"


def labels_file(results: str | os.PathLike, dataset_key: str) -> Path:
    """RESULTS/labels/<name>-<sha12>.npy: a dataset's train-pool labels (int64, by pool index), stored by the
    runners so that reports can name the class of every pick from the `selected` column alone.
    `dataset_key` is the dataset's spec as JSON (`DatasetSpec.model_dump_json()`)."""
    name = json.loads(dataset_key)["name"]
    return Path(results) / LABELS_DIR / f"{name}-{hashlib.sha256(dataset_key.encode()).hexdigest()[:12]}.npy"


def trial_file(results: str | os.PathLike, trial_id: str) -> Path:
    return Path(results) / ROUNDS_DIR / f"{trial_id}.parquet"


def read_rounds(results: str | os.PathLike) -> pd.DataFrame:
    """Every round of every trial in a results folder (empty frame with the schema's columns if none).

    Read with the current schema, so files written before a column existed read it as null."""
    folder = Path(results) / ROUNDS_DIR
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return SCHEMA.empty_table().to_pandas()
    return _versions_apart(pads.dataset(folder, schema=SCHEMA, format="parquet").to_table().to_pandas())


def plugins_text(plugins: dict[str, str]) -> str:
    return "; ".join(f"{kind}: {provenance}" for kind, provenance in sorted(plugins.items()))


def _versions_apart(rounds: pd.DataFrame) -> pd.DataFrame:
    """Where one strategy's trials of a grid ran on two versions of a plugin (a package upgraded between runs),
    each version's rows carry it in their `strategy` label: no table or figure averages two versions' seeds."""
    plugins = rounds["plugins"].fillna("")  # null: albench's own (and every row from before plugins)
    keys = ["experiment", "dataset", "regime", "strategy"]
    mixed = plugins.groupby([rounds[k] for k in keys]).transform("nunique") > 1
    if mixed.any():
        rounds = rounds.copy()
        rounds.loc[mixed, "strategy"] = rounds.loc[mixed, "strategy"] + " [" + plugins[mixed] + "]"
    return rounds


def spec_columns(spec: TrialSpec) -> dict:
    """The columns every row of a trial shares: its identity, names and resolved spec."""
    regime = spec.regime
    return {
        "experiment": spec.experiment,
        "trial_id": spec.trial_id,
        "dataset": spec.dataset.name,
        "regime": spec.regime_name,
        "strategy": spec.strategy.shown,
        "strategy_name": spec.strategy.name,
        "seed": spec.seed,
        "model": spec.model,
        "plugins": plugins_text(spec.plugins) or None,
        "initial": regime.initial,
        "query": regime.query,
        "subset": regime.subset,
        "budget": regime.budget,
        "n_rounds": len(regime.labeled_counts),
        "precision": spec.train.precision,
        "deterministic": spec.train.deterministic,
        "spec_version": SPEC_VERSION,
        "spec": spec.model_dump_json(),
    }


def rows_of(spec: TrialSpec, records: list[RoundRecord]) -> list[dict]:
    """One row per record: the spec's columns, the round's fields, and where and by which code it ran."""
    fixed = spec_columns(spec)
    return [
        {**fixed, **r.to_dict(), "per_class_accuracy": list(r.per_class_accuracy), "selected": list(r.selected)}
        for r in records
    ]


def read_trial_rows(results: str | os.PathLike, trial_id: str) -> list[dict]:
    """The rows a trial's file holds (none if it has no file)."""
    path = trial_file(results, trial_id)
    return pq.read_table(path).to_pylist() if path.exists() else []


def write_rounds(results: str | os.PathLike, rows: list[dict]) -> None:
    """Upserts rows of one trial on (trial_id, round): rows already in its file are replaced, others kept.

    A row that does not know which code computed it (a round from a checkpoint of albench <= 17506af) keeps the
    provenance its earlier row recorded."""
    if not rows:
        return
    path = trial_file(results, rows[0]["trial_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    by_round = {row["round"]: row for row in read_trial_rows(results, rows[0]["trial_id"])}
    for row in rows:
        earlier = by_round.get(row["round"], {})
        if not row.get("git_sha"):
            row = {**row, "git_sha": earlier.get("git_sha") or "unknown", "device": earlier.get("device") or ""}
        by_round[row["round"]] = {name: row.get(name) for name in SCHEMA.names}
    table = pa.Table.from_pylist([by_round[r] for r in sorted(by_round)], schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def trials_with_rows(results: str | os.PathLike) -> set[str]:
    """The ids of the trials that have a rows file, from one listing of the folder (no file is opened)."""
    folder = Path(results) / ROUNDS_DIR
    if not folder.is_dir():
        return set()
    return {e.name[: -len(".parquet")] for e in os.scandir(folder) if e.name.endswith(".parquet") and e.name[0] != "."}


def rounds_done(results: str | os.PathLike, trial_id: str) -> int:
    """How many rounds of a trial its Parquet file holds (0 if none)."""
    path = trial_file(results, trial_id)
    return pq.read_metadata(path).num_rows if path.exists() else 0
