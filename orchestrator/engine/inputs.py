"""A grid's datasets, loaded once by the driver (fails before any trial starts), and their seeded splits saved."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments.datasets import Dataset, load_dataset
from experiments.results import labels_file
from experiments.specs import TrialSpec
from orchestrator.engine.trial import check_budget_fits


def dataset_key(spec: TrialSpec) -> str:
    return spec.dataset.model_dump_json()


def load_datasets(specs: list[TrialSpec], data_root: str | None) -> dict[str, Dataset]:
    """Each distinct dataset once; a missing dataset or a budget larger than its pool stops everything first."""
    datasets: dict[str, Dataset] = {}
    for spec in specs:
        key = dataset_key(spec)
        if key not in datasets:
            datasets[key] = load_dataset(spec.dataset, data_root, spec.plugins.get("dataset"))
        check_budget_fits(spec, datasets[key])
    return datasets


def save_labels(results: Path, datasets: dict[str, Dataset]) -> None:
    """Each dataset's train-pool labels, for the reports' class histograms of the picks (written once)."""
    for key, dataset in datasets.items():
        path = labels_file(results, key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp.npy")
            np.save(temporary, dataset.train_labels.numpy().astype(np.int64))
            temporary.replace(path)


def save_splits(results: Path, datasets: dict[str, Dataset]) -> None:
    """Stores the file lists of seeded splits with the run, so a result says exactly which images were tested."""
    for key, dataset in datasets.items():
        if dataset.split:
            path = Path(results) / "splits" / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"dataset": json.loads(key), **dataset.split}))


@dataclass(frozen=True)
class DatasetDigest:
    """A dataset a trial reads, as MLflow shows it: a name, a digest of its images and labels, and the context
    it is read in (train: the split the labeled set is drawn from; test; pool: the unlabeled images scored)."""

    name: str
    context: str
    digest: str
    source: dict = field(default_factory=dict)
    profile: dict = field(default_factory=dict)


def _hashed(sha: hashlib._Hash, tensor: torch.Tensor) -> hashlib._Hash:
    """`sha` updated with the tensor's shape and bytes: equal data, equal digest, on any machine."""
    sha.update(str(tuple(tensor.shape)).encode())
    sha.update(memoryview(np.ascontiguousarray(tensor.numpy())).cast("B"))
    return sha


def dataset_digests(key: str, dataset: Dataset) -> list[DatasetDigest]:
    """The train, test and pool inputs of every trial on this dataset (its spec, as JSON, is `key`). Digests:
    16 hex digits of the SHA-256 of the images' and then the labels' shapes and bytes."""
    source, shape = json.loads(key), list(dataset.train_images.shape[1:])

    def digest(context: str, sha: hashlib._Hash, images: int, labelled: bool) -> DatasetDigest:
        profile = {"images": images, "image_shape": shape}
        if labelled:
            profile["classes"] = len(dataset.class_names)
        return DatasetDigest(f"{dataset.name}-{context}", context, sha.hexdigest()[:16], source, profile)

    pool = _hashed(hashlib.sha256(), dataset.train_images)  # the strategies see the pool's images, never labels
    train = _hashed(pool.copy(), dataset.train_labels)  # the same images, hashed once
    test = _hashed(_hashed(hashlib.sha256(), dataset.test_images), dataset.test_labels)
    n_train, n_test = len(dataset.train_images), len(dataset.test_images)
    return [
        digest("train", train, n_train, True),
        digest("test", test, n_test, True),
        digest("pool", pool, n_train, False),
    ]


def inputs_of(datasets: dict[str, Dataset]):
    """spec -> the DatasetDigests of its dataset, each dataset hashed once, on first use."""
    cache: dict[str, list[DatasetDigest]] = {}

    def of(spec: TrialSpec) -> list[DatasetDigest]:
        key = dataset_key(spec)
        if key not in cache:
            cache[key] = dataset_digests(key, datasets[key])
        return cache[key]

    return of
