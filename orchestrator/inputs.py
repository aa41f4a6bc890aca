"""A grid's datasets, loaded once by the driver (fails before any trial starts), and their seeded splits saved."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from experiments.datasets import Dataset, load_dataset
from experiments.specs import TrialSpec
from orchestrator.trial import check_budget_fits


def dataset_key(spec: TrialSpec) -> str:
    return spec.dataset.model_dump_json()


def load_datasets(specs: list[TrialSpec], data_root: str | None) -> dict[str, Dataset]:
    """Each distinct dataset once; a missing dataset or a budget larger than its pool stops everything first."""
    datasets: dict[str, Dataset] = {}
    for spec in specs:
        key = dataset_key(spec)
        if key not in datasets:
            datasets[key] = load_dataset(spec.dataset, data_root)
        check_budget_fits(spec, datasets[key])
    return datasets


def save_splits(results: Path, datasets: dict[str, Dataset]) -> None:
    """Stores the file lists of seeded splits with the run, so a result says exactly which images were tested."""
    for key, dataset in datasets.items():
        if dataset.split:
            path = Path(results) / "splits" / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"dataset": json.loads(key), **dataset.split}))
