"""Shared fixtures: real data (the embedded digits, the CIFAR-10 subset when present) and small trial specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.datasets import Dataset, load_dataset
from experiments.defaults import DEFAULTS, resolve_train
from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec
from strategies import resolve_strategy

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


def trial_spec(
    dataset: str, model: str, regime: RegimeSpec, strategy: str, seed: int, settings: dict | None = None, **train
) -> TrialSpec:
    """A test trial: the dataset's reference training settings with the given overrides, the strategy's
    settings resolved as a grid resolves them."""
    reference = DEFAULTS[dataset].train
    resolved = resolve_train(reference, train)
    return TrialSpec(
        experiment="tests",
        dataset=DatasetSpec(name=dataset),
        model=model,
        regime_name="test",
        regime=regime,
        strategy=resolve_strategy(strategy, settings or {}, resolved, reference),
        seed=seed,
        train=resolved,
    )


def tiny_spec(strategy: str = "random", seed: int = 0, settings: dict | None = None, **train) -> TrialSpec:
    """A digits trial of 4 rounds with 3 epochs each: seconds, yet every code path of a real trial."""
    regime = RegimeSpec(initial=10, query=10, subset=100, budget=40)
    return trial_spec("digits", "small_cnn", regime, strategy, seed, settings, **{"epochs": 3, **train})
