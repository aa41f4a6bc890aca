"""Where a trial's time goes: data load, train, evaluate, score, select, checkpoint, Parquet and MLflow writes,
and what Ray adds.

Usage: .venv/bin/python -m bench.trial [--strategy lplgrad] [--cpus 2]
Part 1 runs one trial of experiments/grids/cifar10_subset.yaml (real CIFAR-10 subset, small CNN) in-process
with a timer around each step (the functions the runner calls are wrapped here, nothing in albench is
instrumented), then the same trial through Ray Tune (the records are checked identical, so the work is the
same). The Ray run's wall is split from Tune's own per-iteration times (result.json) and each trial's start
time (its checkpoint): start-up, per-round reports, set-up, gaps between trials, packing. Part 2 does the
same for the whole demo grid. Writes bench/results/trial.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import orchestrator.engine.trial as trial_module
import orchestrator.run.driver as driver
import orchestrator.store.bookkeeper as bookkeeper_module
from bench.environment import CIFAR10_SUBSET, machine_header, write_result
from experiments.results import read_rounds
from orchestrator.plan.grid import load_grid
from orchestrator.run.local import run_grid_locally
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.tracking import Tracker
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
        (driver, "load_datasets", "data load"),
        (trial_module, "train_round", "train"),
        (trial_module, "evaluate", "evaluate"),
        (bookkeeper_module, "save_checkpoint", "checkpoint"),
        (bookkeeper_module, "write_entry", "ledger"),
        (bookkeeper_module, "write_rounds", "Parquet"),
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


def ray_parts(results: Path, call: tuple[float, float], fit_start: float, parallel: int) -> dict[str, float]:
    """Where the Ray run's wall went, from Tune's per-iteration times and each trial's start time.

    Slot-seconds (time inside trial actors) are divided by the slots, so the parts add up to the wall.
    """
    import json

    from orchestrator.engine.checkpoint import read_records
    from orchestrator.store.ledger import read_all

    starts = {e.trial_id: float(read_records(e.checkpoint, e.trial_id)[1]["started_at"]) for e in read_all(results)}
    spans, first_round, per_round, own, by_pid = [], 0.0, 0.0, 0.0, defaultdict(list)
    for path in (results / "tune").glob("*/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for i, row in enumerate(rows):
            work = row["train_seconds"] + row["eval_seconds"] + row["query_seconds"]
            own += work
            if i == 0:
                first_round += row["time_this_iter_s"] - work
            else:
                per_round += row["time_this_iter_s"] - work
        start = starts[path.parent.name]
        end = start + sum(row["time_this_iter_s"] for row in rows)
        spans.append((start, end))
        by_pid[rows[0]["pid"]].append((start, end))
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    gaps = sum(b[0] - a[1] for runs in by_pid.values() for a, b in zip(sorted(runs), sorted(runs)[1:], strict=False))
    idle = parallel * (last - first) - sum(e - s for s, e in spans) - gaps
    return {
        "before Tune: data load, plan, MLflow runs": fit_start - call[0],
        "Tune start until the first trial runs (actors, imports, data)": first - fit_start,
        "trials' own work (train + evaluate + query)": own / parallel,
        "per round in the actor: its checkpoint + tune.report": per_round / parallel,
        "first round in the actor: networks, strategy, set-up": first_round / parallel,
        "between trials on a reused actor": gaps / parallel,
        "slots idle while others finish (packing)": idle / parallel,
        "after the last trial (Tune's wrap-up)": call[1] - last,
    }


def split(
    grid_path: Path, data_root: str | None, cpus: int, results: Path, parallel: int
) -> tuple[dict, float, float, float, dict]:
    """(per-step seconds in-process, in-process wall, Ray wall, trials' own seconds, Ray parts) of one grid."""
    import ray
    from ray import tune

    from orchestrator.run.ray_runner import run_grid_on_ray

    grid = load_grid(grid_path)
    quiet = lambda line: None  # noqa: E731
    SECONDS.clear()
    local_results = results / "in-process"
    start = time.perf_counter()
    with timers(list(grid.strategies)):
        keeper = Bookkeeper.tracking(local_results, None, grid.name)
        run_grid_locally(grid, keeper, data_root=data_root, report=quiet, round_progress=False)
    local_wall = time.perf_counter() - start
    steps = dict(SECONDS)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray_results = results / "ray"
    keeper = Bookkeeper.tracking(ray_results, None, grid.name)
    fit, fit_start = tune.Tuner.fit, []

    def timed_fit(self):
        fit_start.append(time.time())
        return fit(self)

    tune.Tuner.fit = timed_fit
    try:
        start = time.time()
        run_grid_on_ray(grid, keeper, data_root=data_root, report=quiet)
        end = time.time()
    finally:
        tune.Tuner.fit = fit
    ray_wall = end - start
    ray.shutdown()
    parts = ray_parts(ray_results, (start, end), fit_start[0], parallel)
    a = read_rounds(local_results).sort_values(["trial_id", "round"])
    b = read_rounds(ray_results).sort_values(["trial_id", "round"])
    same = a["selected"].map(list).tolist() == b["selected"].map(list).tolist()
    assert same and a["test_accuracy"].tolist() == b["test_accuracy"].tolist(), "Ray and in-process differ"
    own = float((b["train_seconds"] + b["eval_seconds"] + b["query_seconds"]).sum())
    return steps, local_wall, ray_wall, own, parts


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

    def table(
        title: str, steps: dict, local_wall: float, ray_wall: float, parallel: int, own: float, parts: dict
    ) -> None:
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
        emit(f"Through Ray Tune on {args.cpus} CPUs, {parallel} trial(s) at a time: where the wall went")
        emit("")
        emit("| part of the Ray run | seconds of wall | share |")
        emit("|---|---:|---:|")
        for name, seconds in parts.items():
            emit(f"| {name} | {seconds:.2f} | {seconds / ray_wall:.1%} |")
        emit(f"| **Ray wall** | {ray_wall:.2f} | 100% |")
        emit("")
        per_round_ray = parts["per round in the actor: its checkpoint + tune.report"] * parallel
        emit(
            f"Bookkeeping per round: checkpoint + ledger + Parquet + MLflow {bookkeeping:.2f} s (in-process) + Ray's "
            f"per-round report {per_round_ray:.2f} s = **{(bookkeeping + per_round_ray) / own:.1%}** of the trials' "
            f"own time ({own:.2f} s). Whole run: Ray wall / ideal ({own / parallel:.2f} s) = "
            f"{ray_wall / (own / parallel):.2f}, the rest being the fixed start-up, set-up and packing above."
        )
        emit("")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if CIFAR10_SUBSET.exists():
            path = _grid_file(tmp, args.grid, [args.strategy], [0])
            result = split(path, str(CIFAR10_SUBSET), args.cpus, tmp / "one", 1)
            table(f"One {args.strategy} trial of {args.grid} (seed 0)", *result[:3], 1, *result[3:])
        else:
            print(f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET}: part 1 skipped")
        if args.skip_demo:
            return print("\n".join(lines))
        demo = load_grid("experiments/grids/demo.yaml")
        parallel = max(1, args.cpus // max(1, int(demo.resources.cpus_per_trial)))
        result = split(Path("experiments/grids/demo.yaml"), None, args.cpus, tmp / "demo", parallel)
        table(f"The demo grid ({len(demo.trials())} trials)", *result[:3], parallel, *result[3:])
    print(f"written to {write_result('trial', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
