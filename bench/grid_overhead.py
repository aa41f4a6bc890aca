"""Orchestration overhead: a grid's wall time through Ray Tune and in-process, against its trials' own times.

Usage: .venv/bin/python -m bench.grid_overhead [GRID] [--cpus N]   (default: the demo grid, a local Ray instance)
The trials' own time is the sum of their train + eval + query seconds from the Parquet rows; the ideal wall
time on N CPUs with one CPU per trial is that sum / N (perfect packing, no bookkeeping).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from experiments.results import read_rounds
from orchestrator.plan.grid import load_grid
from orchestrator.run.local import run_grid_locally
from orchestrator.store.bookkeeper import Bookkeeper


def trial_seconds(results: Path) -> float:
    rows = read_rounds(results)
    return float((rows["train_seconds"] + rows["eval_seconds"] + rows["query_seconds"]).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("grid", nargs="?", default="experiments/grids/demo.yaml")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()
    grid = load_grid(args.grid)
    quiet = lambda line: None  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        import ray

        from orchestrator.run.ray_runner import run_grid_on_ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        for mode in ("ray", "in-process"):
            results = Path(tmp) / mode
            start = time.perf_counter()
            keeper = Bookkeeper.tracking(results, None, grid.name)
            if mode == "ray":
                run_grid_on_ray(grid, keeper, report=quiet)
            else:
                run_grid_locally(grid, keeper, report=quiet, round_progress=False)
            rows.append((mode, time.perf_counter() - start, trial_seconds(results)))
        ray.shutdown()
    print(f"grid {grid.name}: {len(grid.trials())} trials, {args.cpus} CPUs, {grid.resources.cpus_per_trial} CPU/trial")
    print(f"{'mode':12} {'wall s':>8} {'trials own s':>13} {'ideal wall s':>13} {'wall / ideal':>13}")
    for mode, wall, own in rows:
        parallel = args.cpus // max(1, int(grid.resources.cpus_per_trial)) if mode == "ray" else 1
        ideal = own / parallel
        print(f"{mode:12} {wall:8.1f} {own:13.1f} {ideal:13.1f} {wall / ideal:13.2f}")


if __name__ == "__main__":
    main()
