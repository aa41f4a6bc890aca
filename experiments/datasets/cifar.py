"""CIFAR-10 and CIFAR-100 from the official 'python version' pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from experiments.datasets.base import Dataset, missing_dataset, torchvision_available

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # as in the LL4AL/LPLgrad code
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _how_to_get(cls: str, url: str, root: Path) -> str:
    if torchvision_available():
        return (
            f"Download it with: python -c \"from torchvision.datasets import {cls}; {cls}('{root}', download=True)\"."
        )
    return f"Download {url} and extract it into {root}."


def _require(folder: Path, files: list[str], dataset: str, how: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise missing_dataset(dataset, folder, f"files {', '.join(files)} (missing: {', '.join(missing)})", how)


def _read_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _class_names(meta_file: Path, key: str, n: int) -> tuple[str, ...]:
    if meta_file.is_file():
        with open(meta_file, "rb") as handle:
            return tuple(pickle.load(handle, encoding="latin1")[key])
    return tuple(str(i) for i in range(n))


def load_cifar10(root: Path) -> Dataset:
    """The five training batches and the test batch under ROOT/cifar-10-batches-py/."""
    folder = root / CIFAR10_DIR
    how = _how_to_get("CIFAR10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", root)
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    _require(folder, [*train_files, "test_batch"], "cifar10", how)
    train, test = _read_batches(folder, train_files, "labels"), _read_batches(folder, ["test_batch"], "labels")
    names = _class_names(folder / "batches.meta", "label_names", 10)
    return Dataset.from_arrays("cifar10", train, test, names, CIFAR10_MEAN, CIFAR10_STD)


def load_cifar100(root: Path) -> Dataset:
    """The 'train' and 'test' pickles under ROOT/cifar-100-python/, with the 100 fine labels."""
    folder = root / CIFAR100_DIR
    how = _how_to_get("CIFAR100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", root)
    _require(folder, ["train", "test"], "cifar100", how)
    train, test = _read_batches(folder, ["train"], "fine_labels"), _read_batches(folder, ["test"], "fine_labels")
    names = _class_names(folder / "meta", "fine_label_names", 100)
    return Dataset.from_arrays("cifar100", train, test, names, CIFAR100_MEAN, CIFAR100_STD)
