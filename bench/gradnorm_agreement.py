"""Prints how closely per_sample_grad_norms agrees with the reference one-sample-at-a-time backward loop.

Usage: .venv/bin/python -m bench.gradnorm_agreement   (float64, random inputs, BN with non-trivial running stats)
"""

from __future__ import annotations

import time

import torch

from models import build_model
from strategies.gradnorm import per_sample_grad_norms
from tests.strategies.test_gradnorm import _with_running_stats, reference_loop

CASES = [
    ("small_cnn", (1, 8, 8), 8),
    ("small_cnn", (3, 32, 32), 8),
    ("resnet18", (3, 32, 32), 4),
]


def main() -> None:
    torch.manual_seed(0)
    print(
        f"{'model':10} {'input':10} {'loss':12} {'aggregate':10} {'max rel. error':>15} {'loop s':>7} {'batched s':>9}"
    )
    for name, shape, n in CASES:
        model = _with_running_stats(build_model(name, 10, shape[0]), shape)
        x = torch.randn(n, *shape, dtype=torch.float64)
        for loss in ("entropy", "expected_ce"):
            for aggregate in ("layer_sum", "l2"):
                start = time.perf_counter()
                expected = reference_loop(model, x, loss, aggregate)
                looped = time.perf_counter() - start
                start = time.perf_counter()
                got = per_sample_grad_norms(model, x, loss=loss, aggregate=aggregate)
                batched = time.perf_counter() - start
                error = float(((got - expected).abs() / expected.abs()).max())
                size = "x".join(map(str, shape))
                print(f"{name:10} {size:10} {loss:12} {aggregate:10} {error:15.2e} {looped:7.2f} {batched:9.2f}")


if __name__ == "__main__":
    main()
