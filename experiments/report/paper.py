# ruff: noqa: E501  (the rows of the paper's table stay one line each, as printed)
"""The LPLgrad paper's Table III (high budget, accuracy %, mean ± std over 5 seeds) and Table II settings."""

from __future__ import annotations

# Table II, high budget: dataset -> (query size b, subset S, budget B)
HIGH_BUDGET = {
    "cifar10": (1000, 25000, 10000),
    "cifar100": (2500, 25000, 20000),
    "svhn": (1000, 25000, 10000),
    "caltech101": (500, 2000, 3500),
}

_STRATEGIES = ("learning_loss", "entropy", "ent_gradnorm", "coreset", "random", "lplgrad")
_COLUMNS = [
    ("cifar10", 3000),
    ("cifar10", 6000),
    ("cifar10", 9000),
    ("cifar100", 7500),
    ("cifar100", 12500),
    ("cifar100", 20000),
    ("svhn", 3000),
    ("svhn", 6000),
    ("svhn", 9000),
    ("caltech101", 1500),
    ("caltech101", 2500),
    ("caltech101", 3500),
]
_ROWS = {
    "learning_loss": "71.3±1.1 86.0±0.2 89.7±0.3 43.7±1.1 60.6±0.4 66.0±0.5 90.0±0.3 93.9±0.1 95.1±0.1 36.0±0.6 46.8±0.5 53.5±1.0",
    "entropy": "65.2±2.9 84.1±0.8 88.9±0.4 44.4±1.0 60.4±0.3 66.5±0.2 89.6±0.3 93.7±0.1 94.9±0.1 36.9±0.4 45.6±0.8 54.1±1.5",
    "ent_gradnorm": "68.0±1.3 84.8±0.4 89.0±0.2 46.6±0.8 61.7±0.5 66.7±0.2 89.7±0.3 93.4±0.1 94.8±0.1 38.3±1.4 47.5±1.6 54.4±1.4",
    "coreset": "64.0±1.9 81.7±0.6 86.0±0.3 44.3±1.0 59.8±0.8 64.5±0.6 82.3±0.3 87.6±0.1 89.7±0.1 37.8±1.3 45.5±2.1 51.5±2.0",
    "random": "71.7±0.8 83.8±0.7 86.2±0.5 44.4±1.8 59.3±0.6 64.3±0.1 81.9±0.5 87.5±0.1 89.6±0.0 36.0±1.4 44.1±1.6 50.8±1.7",
    "lplgrad": "72.4±1.1 86.2±0.2 90.1±0.3 46.8±1.1 62.8±0.4 67.0±1.4 90.2±0.1 93.7±0.1 95.1±0.0 38.6±1.9 49.1±2.0 56.6±1.2",
}

# (dataset, n_labeled, strategy) -> (mean %, std %)
TABLE_III: dict[tuple[str, int, str], tuple[float, float]] = {
    (dataset, n, strategy): tuple(float(v) for v in cell.split("±"))
    for strategy in _STRATEGIES
    for (dataset, n), cell in zip(_COLUMNS, _ROWS[strategy].split(), strict=True)
}


def is_high_budget(dataset: str, query: int, subset: int | None, budget: int) -> bool:
    """Whether a regime is the paper's high-budget setting of that dataset (so its numbers are comparable)."""
    return HIGH_BUDGET.get(dataset) == (query, subset, budget)
