"""Shared fixtures: real data (the embedded digits, the CIFAR-10 subset when present) and small trial specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.datasets import Dataset, load_dataset
from experiments.defaults import DEFAULTS, resolve_train
from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec

REPO = Path(__file__).resolve().parent.parent
CIFAR10_SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset"


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def cifar10_subset_root() -> Path:
    if not (CIFAR10_SUBSET / "cifar-10-batches-py").is_dir():
        pytest.skip(
            f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET} (it lives beside the checkout in shared/data)"
        )
    return CIFAR10_SUBSET


def tiny_spec(strategy: str = "random", seed: int = 0, **train_overrides) -> TrialSpec:
    """A digits trial of 4 rounds with 3 epochs each: seconds, yet every code path of a real trial."""
    train = resolve_train(DEFAULTS["digits"].train, {"epochs": 3, **train_overrides})
    return TrialSpec(
        experiment="tests",
        dataset=DatasetSpec(name="digits"),
        model="small_cnn",
        regime_name="tiny",
        regime=RegimeSpec(initial=10, query=10, subset=100, budget=40),
        strategy=strategy,
        seed=seed,
        train=train,
    )
