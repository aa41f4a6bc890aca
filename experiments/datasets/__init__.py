"""The dataset registry: name -> loader of a `Dataset` (uint8 images + int64 labels, train pool and test).

Besides albench's own, it holds the datasets other installed packages declare in the entry-point group
`albench.datasets` (`experiments.plugins`): each a `DatasetPlugin` (a loader, a backbone and a schedule)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from experiments.datasets.base import Dataset, DatasetPlugin, resolve_data_root
from experiments.datasets.cifar import load_cifar10, load_cifar100
from experiments.datasets.digits import load_digits_dataset
from experiments.datasets.folders import load_caltech101, load_image_folder
from experiments.datasets.svhn import load_svhn
from experiments.defaults import DEFAULTS, DatasetDefaults
from experiments.errors import ConfigError
from experiments.plugins import Plugin, PluginError, Registry
from experiments.specs import DatasetSpec

__all__ = [
    "Dataset",
    "DatasetPlugin",
    "DATASET_NAMES",
    "REGISTRY",
    "complete_dataset_spec",
    "defaults_of",
    "load_dataset",
    "resolve_data_root",
]


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
DATASET_NAMES = tuple(sorted(LOADERS))  # albench's own; `REGISTRY.names()` adds the plugins'


def _dataset_plugin(plugin: Plugin, found: object) -> DatasetPlugin:
    if not isinstance(found, DatasetPlugin):
        raise PluginError(
            f"dataset '{plugin.name}' (entry point '{plugin.entry_point}' of {plugin.provenance}) is {found!r}: "
            "it must be an albench.api.DatasetPlugin(load=..., model=..., train=...)"
        )
    return found


REGISTRY: Registry[Callable | DatasetPlugin] = Registry("dataset", LOADERS, _dataset_plugin)


def defaults_of(name: str, planned_with: str | None = None) -> DatasetDefaults:
    """The backbone and reference schedule of a dataset, albench's own or a plugin's."""
    found = REGISTRY.get(name, planned_with)
    if isinstance(found, DatasetPlugin):
        return DatasetDefaults(model=found.model, train=found.train)
    return DEFAULTS[name]


def complete_dataset_spec(spec: DatasetSpec) -> DatasetSpec:
    """Checks the name and options, and fills in the defaults that change the data, so they enter the trial id."""
    if isinstance(REGISTRY.get(spec.name), DatasetPlugin):
        given = spec.model_dump(exclude_defaults=True, exclude={"name"})
        if given:
            raise ConfigError(
                f"dataset '{spec.name}' is a plugin's ({REGISTRY.provenance(spec.name)}): its loader takes no "
                f"options, got {', '.join(given)}; give the plain name"
            )
        return spec
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


def load_dataset(
    spec: DatasetSpec | str, data_root: str | os.PathLike | None = None, planned_with: str | None = None
) -> Dataset:
    """Loads a dataset fully into memory; a missing or partial one raises DatasetNotFoundError. `planned_with`: a
    plugin's package and version as the trial's spec records them."""
    spec = complete_dataset_spec(DatasetSpec(name=spec) if isinstance(spec, str) else spec)
    found, root = REGISTRY.get(spec.name, planned_with), resolve_data_root(data_root)
    if not isinstance(found, DatasetPlugin):
        return found(spec, root)
    dataset = found.load(root)
    if not isinstance(dataset, Dataset):
        raise PluginError(
            f"dataset '{spec.name}' ({REGISTRY.provenance(spec.name)}): its loader returned {type(dataset).__name__}, "
            "not an albench.api.Dataset"
        )
    return dataset
