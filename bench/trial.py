"""Where a trial's time goes: data load, train, evaluate, score, select, checkpoint, Parquet and MLflow writes,
and what Ray adds.

Usage: .venv/bin/python -m bench.trial [--strategy lplgrad] [--cpus 2]
Part 1 runs one trial of experiments/grids/cifar10_subset.yaml (real CIFAR-10 subset, small CNN) in-process
with a timer around each step (the functions the runner calls are wrapped here, nothing in albench is
instrumented), then the same trial through Ray Tune: Ray's share is the difference of the two walls (the
records are checked identical, so the work is the same). Part 2 does the same split for the whole demo
grid. Writes bench/results/trial.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import orchestrator.local as local
import orchestrator.sinks as sinks_module
import orchestrator.trial as trial_module
from bench.environment import CIFAR10_SUBSET, machine_header, write_result
from experiments.grid import load_grid
from orchestrator.local import run_grid_locally
from orchestrator.results import read_rounds
from orchestrator.sinks import Sinks
from orchestrator.tracking import Tracker, default_tracking_uri
from strategies import STRATEGIES, build_strategy

SECONDS: dict[str, float] = defaultdict(float)


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - start

    return wrapper


@contextmanager
def timers(strategy_names: list[str]):
    """Wraps the steps of a round where the runner looks them up (module globals and class methods)."""
    patches = [
        (local, "load_datasets", "data load"),
        (trial_module, "train_round", "train"),
        (trial_module, "evaluate", "evaluate"),
        (local, "save_checkpoint", "checkpoint"),
        (local, "write_entry", "ledger"),
        (sinks_module, "write_rounds", "Parquet"),
        (Tracker, "log_rounds", "MLflow"),
        (Tracker, "set_status", "MLflow"),
        (Tracker, "run_for", "MLflow"),
    ]
    for name in strategy_names:
        cls = type(build_strategy(name))
        patches += [(cls, "prepare", "score"), (cls, "score", "score"), (cls, "select", "select")]
    originals = [(owner, attr, owner.__dict__.get(attr)) for owner, attr, _ in patches]
    for owner, attr, label in patches:
        setattr(owner, attr, _timed(label, getattr(owner, attr)))
    try:
        yield
    finally:
        for owner, attr, original in originals:
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def _grid_file(tmp: Path, source: str, strategies: list[str] | None, seeds: list[int] | None) -> Path:
    import yaml

    data = yaml.safe_load(Path(source).read_text())
    if strategies:
        data["strategies"] = strategies
    if seeds:
        data["seeds"] = seeds
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def split(grid_path: Path, data_root: str | None, cpus: int, results: Path) -> tuple[dict, float, float, float]:
    """(per-step seconds in-process, in-process wall, Ray wall, trials' own seconds) of one grid."""
    import ray

    from orchestrator.ray_runner import run_grid_on_ray

    grid = load_grid(grid_path)
    quiet = lambda line: None  # noqa: E731
    SECONDS.clear()
    local_results = results / "in-process"
    start = time.perf_counter()
    with timers(list(grid.strategies)):
        sinks = Sinks(local_results, Tracker(default_tracking_uri(local_results), grid.name, local_results))
        run_grid_locally(grid, local_results, sinks, data_root=data_root, report=quiet, round_progress=False)
    local_wall = time.perf_counter() - start
    steps = dict(SECONDS)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray_results = results / "ray"
    start = time.perf_counter()
    sinks = Sinks(ray_results, Tracker(default_tracking_uri(ray_results), grid.name, ray_results))
    run_grid_on_ray(grid, ray_results, sinks, data_root=data_root, report=quiet)
    ray_wall = time.perf_counter() - start
    ray.shutdown()
    a = read_rounds(local_results).sort_values(["trial_id", "round"])
    b = read_rounds(ray_results).sort_values(["trial_id", "round"])
    same = a["selected"].map(list).tolist() == b["selected"].map(list).tolist()
    assert same and a["test_accuracy"].tolist() == b["test_accuracy"].tolist(), "Ray and in-process differ"
    own = float((b["train_seconds"] + b["eval_seconds"] + b["query_seconds"]).sum())
    return steps, local_wall, ray_wall, own


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", default="lplgrad", choices=sorted(STRATEGIES))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--grid", default="experiments/grids/cifar10_subset.yaml")
    parser.add_argument("--skip-demo", action="store_true", help="part 1 only")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    lines = [f"# Where a trial's time goes ({machine_header(threads)})", ""]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def table(title: str, steps: dict, local_wall: float, ray_wall: float, parallel: int, own: float) -> None:
        emit(f"## {title}")
        emit("")
        emit("| step | seconds | share of the in-process wall |")
        emit("|---|---:|---:|")
        order = ["data load", "train", "evaluate", "score", "select", "checkpoint", "ledger", "Parquet", "MLflow"]
        for name in order:
            emit(f"| {name} | {steps.get(name, 0.0):.2f} | {steps.get(name, 0.0) / local_wall:.1%} |")
        other = local_wall - sum(steps.get(n, 0.0) for n in order)
        emit(f"| other (grid setup, planning, Python) | {other:.2f} | {other / local_wall:.1%} |")
        emit(f"| **in-process wall** | {local_wall:.2f} | 100% |")
        bookkeeping = sum(steps.get(n, 0.0) for n in ("checkpoint", "ledger", "Parquet", "MLflow"))
        emit("")
        emit(
            f"Through Ray Tune on {args.cpus} CPUs: wall {ray_wall:.2f} s; the trials' own time (train + evaluate + "
            f"query) {own:.2f} s, ideal wall at {parallel} trial(s) at a time {own / parallel:.2f} s, so Ray's "
            f"wall / ideal = {ray_wall / (own / parallel):.2f}. In-process bookkeeping (checkpoint, ledger, "
            f"Parquet, MLflow): {bookkeeping:.2f} s = {bookkeeping / own:.1%} of the trials' own time."
        )
        emit("")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if CIFAR10_SUBSET.exists():
            path = _grid_file(tmp, args.grid, [args.strategy], [0])
            steps, local_wall, ray_wall, own = split(path, str(CIFAR10_SUBSET), args.cpus, tmp / "one")
            table(f"One {args.strategy} trial of {args.grid} (seed 0)", steps, local_wall, ray_wall, 1, own)
        else:
            print(f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET}: part 1 skipped")
        if args.skip_demo:
            return print("\n".join(lines))
        demo = load_grid("experiments/grids/demo.yaml")
        steps, local_wall, ray_wall, own = split(Path("experiments/grids/demo.yaml"), None, args.cpus, tmp / "demo")
        parallel = max(1, args.cpus // max(1, int(demo.resources.cpus_per_trial)))
        table(f"The demo grid ({len(demo.trials())} trials)", steps, local_wall, ray_wall, parallel, own)
    print(f"written to {write_result('trial', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
