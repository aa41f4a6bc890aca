"""The in-memory form every dataset loader returns, and the shared 'files are missing' error."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments.errors import DatasetNotFoundError
from experiments.specs import TrainSpec

DEFAULT_DATA_ROOT = "~/data"


@dataclass(frozen=True)
class Dataset:
    """A labeled train pool and a test split, as uint8 images [N, C, H, W] and int64 labels [N].

    Whole datasets of this benchmark fit in memory (CIFAR's 50k images are 150 MB as uint8), so every
    loader materialises them once; the trainer moves them to the device and indexes batches there.
    """

    name: str
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel normalisation, in [0, 1] units
    std: tuple[float, ...]
    split: dict[str, list[str]] = field(default_factory=dict)  # file lists of a seeded split, if any

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images"):
            images = getattr(self, name)
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(
                    f"{self.name}.{name} must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
                )
        if len(self.train_images) != len(self.train_labels) or len(self.test_images) != len(self.test_labels):
            raise ValueError(f"{self.name}: images and labels differ in length")

    @classmethod
    def from_arrays(
        cls,
        name: str,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        class_names: tuple[str, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> Dataset:
        """From numpy (images uint8 [N, C, H, W], labels int64 [N]) pairs, as the official-format readers produce."""
        return cls(
            name,
            torch.from_numpy(train[0]),
            torch.from_numpy(train[1]),
            torch.from_numpy(test[0]),
            torch.from_numpy(test[1]),
            class_names,
            mean,
            std,
        )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: the grid's or CLI's value, else $ALBENCH_DATA_ROOT, else ~/data."""
    chosen = explicit or os.environ.get("ALBENCH_DATA_ROOT") or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser()


def torchvision_available() -> bool:
    """Whether torchvision imports (its registry build does not with a CPU torch)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def missing_dataset(dataset: str, searched: Path | list[Path], expected: str, how_to_get: str) -> DatasetNotFoundError:
    """The one message for absent or partial data: what, where we looked, what we need, how to get it."""
    places = searched if isinstance(searched, list) else [searched]
    where = ", ".join(str(p) for p in places)
    return DatasetNotFoundError(
        f"dataset '{dataset}' not found: searched {where}; expected {expected}. {how_to_get} "
        f"Set the data root with --data-root, the grid's data_root, or $ALBENCH_DATA_ROOT."
    )


def normalisation_of(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (for sets without published constants)."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def seeded_stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions, the same fraction of every class in test, a pure function of the seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        if len(members) > 1:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True)
class DatasetPlugin:
    """What a package's `albench.datasets` entry point names: a loader of the data root, and the backbone and
    reference training schedule its grids use unless they set their own (as `experiments.defaults` gives
    albench's datasets). The loader reads only local files: it runs on the driver, which sends the data on."""

    load: Callable[[Path], Dataset]  # the data root (--data-root, the grid's data_root, $ALBENCH_DATA_ROOT) -> Dataset
    model: str  # a backbone name, albench's or a plugin's
    train: TrainSpec  # the reference schedule; a grid's `train:` overrides apply to it
