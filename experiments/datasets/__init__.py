"""The dataset registry: name -> loader of a `Dataset` (uint8 images + int64 labels, train pool and test)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from experiments.datasets.base import Dataset, resolve_data_root
from experiments.datasets.cifar import load_cifar10, load_cifar100
from experiments.datasets.digits import load_digits_dataset
from experiments.datasets.folders import load_caltech101, load_image_folder
from experiments.datasets.svhn import load_svhn
from experiments.defaults import DEFAULTS
from experiments.errors import ConfigError
from experiments.specs import DatasetSpec

__all__ = ["Dataset", "DATASET_NAMES", "load_dataset", "resolve_data_root", "complete_dataset_spec"]


def _folder_options(spec: DatasetSpec) -> tuple[int, float, int]:
    defaults = DEFAULTS[spec.name]
    return (
        spec.image_size or defaults.image_size,
        spec.test_fraction or defaults.test_fraction,
        spec.split_seed,
    )


LOADERS: dict[str, Callable[[DatasetSpec, Path], Dataset]] = {
    "digits": lambda spec, root: load_digits_dataset(),
    "cifar10": lambda spec, root: load_cifar10(root),
    "cifar100": lambda spec, root: load_cifar100(root),
    "svhn": lambda spec, root: load_svhn(root),
    "caltech101": lambda spec, root: load_caltech101(root, *_folder_options(spec)),
    "imagefolder": lambda spec, root: load_image_folder(root, spec.path, *_folder_options(spec)),
}
DATASET_NAMES = tuple(sorted(LOADERS))


def complete_dataset_spec(spec: DatasetSpec) -> DatasetSpec:
    """Checks the name and options, and fills in the defaults that change the data, so they enter the trial id."""
    if spec.name not in LOADERS:
        raise ConfigError(f"dataset '{spec.name}' is unknown; known: {', '.join(DATASET_NAMES)}")
    defaults = DEFAULTS[spec.name]
    if spec.name == "imagefolder" and not spec.path:
        raise ConfigError("dataset 'imagefolder' needs a path: {name: imagefolder, path: FOLDER}")
    if defaults.image_size is None and (spec.image_size or spec.test_fraction):
        raise ConfigError(
            f"dataset '{spec.name}' has a fixed size and split; image_size and test_fraction do not apply"
        )
    if defaults.image_size is None:
        return spec
    return spec.model_copy(
        update={
            "image_size": spec.image_size or defaults.image_size,
            "test_fraction": spec.test_fraction or defaults.test_fraction,
        }
    )


def load_dataset(spec: DatasetSpec | str, data_root: str | os.PathLike | None = None) -> Dataset:
    """Loads a dataset fully into memory; a missing or partial one raises DatasetNotFoundError."""
    spec = complete_dataset_spec(DatasetSpec(name=spec) if isinstance(spec, str) else spec)
    return LOADERS[spec.name](spec, resolve_data_root(data_root))
