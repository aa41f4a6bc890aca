"""The bounded scoring heap: a pass over many chunks peaks where a pass over two does (glibc, Linux), whatever
the process did before (here: training steps that leave the main heap fragmented).

The peak is the process's VmHWM, so the measurement runs in a fresh Python process of its own: in the pytest
process, threads left by earlier tests (Ray's core worker, MLflow's) allocate while a pass runs, and a pass
over 24 chunks lasts 12x as long as one over 2, so it collects more of their memory (a CI run measured 8.5 MiB
more on the long pass that way; the isolated process, 0.6-1.5 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from experiments.errors import ConfigError
from models import build_model
from models.augment import Normalizer
from orchestrator.plan.grid import parse_grid
from strategies import build_strategy
from strategies.base import ScoringInputs
from strategies.scoring_heap import _LIBC, ScoringHeap, run_scoring, set_scoring_heap

STATUS = Path("/proc/self/status")


def _kib(field: str) -> int:
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def _peak_rise_mib(strategy, inputs: ScoringInputs, repeats: int = 3) -> float:
    """Peak resident memory of a scoring pass above the memory resident before it (VmHWM reset), the least of
    `repeats` passes: VmHWM is the whole process's, so another thread of the test process (Ray's, MLflow's, left
    by earlier tests) allocating during a pass can only add to it."""
    rises = []
    for _ in range(repeats):
        Path("/proc/self/clear_refs").write_text("5")
        start = _kib("VmRSS")
        run_scoring(lambda: strategy.score(inputs))
        rises.append((_kib("VmHWM") - start) / 1024)
    return min(rises)


def measure_peak_rises(training_steps: int = 20, mode: ScoringHeap = "bounded", repeats: int = 3) -> dict[str, float]:
    """Run in a fresh process by the test below: trains a few steps (fragmenting the main heap, as a trial's
    training does), then measures passes over 2 and over 24 chunks in the given heap mode."""
    torch.manual_seed(0)
    chunk = 64
    model = build_model("small_cnn", 10, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(training_steps):
        loss = torch.nn.functional.cross_entropy(
            model(torch.randn(128, 3, 32, 32)).logits, torch.randint(0, 10, (128,))
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # CIFAR-sized images: a chunk's activations are MiB-sized buffers, the ones the mode maps; their pixels
    # do not matter to the memory
    images = torch.randint(0, 256, (24 * chunk, 3, 32, 32), dtype=torch.uint8)
    normalize = Normalizer((0.5,) * 3, (0.25,) * 3)
    strategy = build_strategy("ent_gradnorm")

    def inputs(n: int) -> ScoringInputs:
        return ScoringInputs(model, images[:n], np.arange(n), normalize, chunk, 0)

    set_scoring_heap(mode)
    run_scoring(lambda: strategy.score(inputs(chunk)))  # warm-up: lazy initialisation of kernels and caches
    return {
        "two_chunks": _peak_rise_mib(strategy, inputs(2 * chunk), repeats),
        "many_chunks": _peak_rise_mib(strategy, inputs(24 * chunk), repeats),
    }


@pytest.mark.skipif(_LIBC is None or not STATUS.exists(), reason="the bounded heap is a glibc (Linux) feature")
@pytest.mark.slow  # more than 2 s
def test_bounded_heap_peak_does_not_grow_with_the_pool():
    root = Path(__file__).resolve().parents[2]
    # one pass each: a fresh process has no other thread allocating during it
    probe = "import json; from tests.strategies.test_scoring_heap import measure_peak_rises as m; "
    probe += "print(json.dumps(m(repeats=1)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rises = json.loads(done.stdout.strip().splitlines()[-1])
    two_chunks, many_chunks = rises["two_chunks"], rises["many_chunks"]
    assert two_chunks > 10, f"a chunk of 64 32x32 images should need tens of MiB, measured {two_chunks:.1f}"
    # small buffers (< 1 MiB) stay on the heap: a few MiB of slack; the fast heap drifts by ~10 MiB here
    assert many_chunks <= two_chunks + 4, f"24 chunks peaked at {many_chunks:.1f} MiB, 2 chunks at {two_chunks:.1f}"


def test_unknown_heap_mode_is_refused():
    with pytest.raises(ValueError, match="'fast' or 'bounded'"):
        set_scoring_heap("tight")
    grid = """
name: g
datasets: [digits]
regimes: {small: {initial: 20, query: 20, budget: 60}}
strategies: [random]
seeds: [0]
resources: {scoring_heap: tight}
"""
    with pytest.raises(ConfigError, match="scoring_heap"):
        parse_grid(yaml.safe_load(grid))
