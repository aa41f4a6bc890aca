"""A grid's orchestration overhead as it grows: `albench run` on 25, 100, 400 (and opt-in 1,600) tiny trials,
through Ray and in-process, beside a bare-Tune floor measured in the same run.

Usage: .venv/bin/python -m bench.scale [--sizes 25,100,400] [--paths ray,in-process] [--checkout DIR] [--write]

Each grid: digits, small CNN, 2 rounds (20 -> 40 labels), 1 epoch, 4 strategies x N/4 seeds: a trial computes
about 0.1 s, so everything else is orchestration. Every albench command runs as a user runs it, in a process of
its own (`python -c` in `--checkout`, default this one, so an older checkout is measured by the same script):
- `run` (wall, the driver process's own CPU seconds over its wall = its busy fraction, the trials' own seconds
  from the Parquet rows), then the same `run` again on the finished grid (the no-op re-run), `status`, `table`
  and `report` on it;
- the floor: a Tune trainable with no albench around it, reporting as many rounds per trial with a checkpoint of
  the same size as albench's, spinning for albench's measured seconds per round, one CPU per trial, actors reused;
- start-up: a process that imports what `albench run` imports, and nothing else (the no-op re-run's floor).
`--write` puts the table in bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench import driver_profile
from bench.environment import machine_header, write_result

STRATEGIES = ["random", "entropy", "margin", "least_confidence"]
N_ROUNDS = 2
# run in the measured checkout: the command's own wall and CPU seconds (all its threads, not its children)
DRIVER = (
    "import json, sys, time; start = time.perf_counter(); from orchestrator.cli import main; "
    "code = main(sys.argv[1:]); "
    "print('ALBENCH_SCALE ' + json.dumps({'command': time.perf_counter() - start, 'cpu': time.process_time(), "
    "'code': code}), flush=True); sys.exit(code)"
)
IMPORTS = (
    "import torch, mlflow, pandas, pyarrow.parquet, orchestrator.cli, orchestrator.store.bookkeeper, "
    "orchestrator.run.local"
)


def tiny_grid(n_trials: int, name: str) -> dict:
    return {
        "name": name,
        "datasets": ["digits"],
        "model": "small_cnn",
        "regimes": {"tiny": {"initial": 20, "query": 20, "subset": 200, "budget": 40}},
        "strategies": STRATEGIES,
        "seeds": list(range(n_trials // len(STRATEGIES))),
        "train": {"epochs": 1},
        "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1, "scoring_shards": 1},
    }


def albench(checkout: Path, *args: str, watch: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """One albench command in its own process: its wall (process start included), in-command wall and CPU.
    `watch`: called in a thread with the running process (the profiler)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(checkout)
    os.sync()  # the previous run's checkpoints (GBs at 400 trials) are on disk, not written back during this one
    start = time.perf_counter()
    command = [sys.executable, "-c", DRIVER, *args]
    process = subprocess.Popen(
        command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watcher = threading.Thread(target=watch, args=(process,)) if watch else None
    if watcher:
        watcher.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    if watcher:
        watcher.join()
    line = next((x for x in stdout.splitlines() if x.startswith("ALBENCH_SCALE ")), None)
    if line is None or process.returncode != 0:
        tail = f"{stdout[-3000:]}\n{stderr[-3000:]}"
        raise RuntimeError(f"albench {' '.join(args)} failed ({process.returncode}):\n{tail}")
    return {"wall": wall, **json.loads(line.removeprefix("ALBENCH_SCALE "))}


def profiler(results: Path, n: int, seconds: float, out: dict) -> Callable[[subprocess.Popen], None]:
    """Samples the driver for `seconds` once a third of its trials have rows (as the issue's profile did)."""

    def watch(process: subprocess.Popen) -> None:
        while process.poll() is None and len(list((results / "rounds").glob("*.parquet"))) < n // 3:
            time.sleep(0.5)
        if process.poll() is None:
            collapsed = driver_profile.record(process.pid, seconds)
            if collapsed is not None:
                out["profile"] = driver_profile.top_frames(collapsed)

    return watch


def own_seconds(results: Path) -> float:
    from experiments.results import read_rounds

    rows = read_rounds(results)
    return float((rows["train_seconds"] + rows["eval_seconds"] + rows["query_seconds"]).sum())


def checkpoint_bytes(results: Path) -> int:
    """The size of one finished trial's checkpoint folder (state.pt + records.json)."""
    for records in sorted(results.rglob("records.json")):
        if (records.parent / "state.pt").exists():
            return sum(p.stat().st_size for p in records.parent.iterdir() if p.is_file())
    raise RuntimeError(f"no trial checkpoint under {results}")


def start_up(checkout: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=checkout, env=env, check=True)
    return time.perf_counter() - start


def measure_albench(checkout: Path, n: int, path: str, folder: Path, profile_s: float = 0) -> dict:
    grid_file = folder / f"scale-{n}.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(n, f"scale-{n}")))
    results = folder / f"results-{path}-{n}"
    mode = ["--in-process", "--progress", "trials"] if path == "in-process" else []
    profiled: dict = {}
    watch = profiler(results, n, profile_s, profiled) if profile_s else None
    first = albench(checkout, "run", str(grid_file), "--results", str(results), *mode, watch=watch)
    again = albench(checkout, "run", str(grid_file), "--results", str(results), *mode)
    out = {
        "run": first,
        "noop": again,
        "own": own_seconds(results),
        "bytes": checkpoint_bytes(results),
        "status": albench(checkout, "status", "--results", str(results))["wall"],
        "table": albench(checkout, "table", "--results", str(results))["wall"],
        "report": albench(checkout, "report", "--results", str(results))["wall"],
        **profiled,
    }
    return out


# -- the floor: bare Tune, the same trials' shape and work, no albench


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def floor_trainable(config: dict) -> None:
    from ray import tune

    payload = os.urandom(config["bytes"])
    for r in range(config["rounds"]):
        _spin(config["round_s"])
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "state.pt").write_bytes(payload)
            tune.report({"round": r}, checkpoint=tune.Checkpoint.from_directory(directory))


def run_floor(n: int, rounds: int, size: int, round_s: float) -> dict:
    """In a fresh process like albench's driver: Tune's defaults (its own snapshot policy), 1 CPU per trial."""
    import logging

    import ray
    from ray import tune

    start, cpu = time.perf_counter(), time.process_time()
    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(floor_trainable, {"cpu": 1}),
            param_space={"i": tune.grid_search(list(range(n))), "rounds": rounds, "bytes": size, "round_s": round_s},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, name="floor", verbose=0),
        )
        tuner.fit()
    ray.shutdown()
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def floor(n: int, size: int, round_s: float) -> dict:
    args = ["--floor", str(n), "--floor-bytes", str(size), "--floor-round-s", str(round_s)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    os.sync()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.scale", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = next((x for x in done.stdout.splitlines() if x.startswith("ALBENCH_SCALE ")), None)
    if line is None:
        raise RuntimeError(f"the floor failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"wall": wall, **json.loads(line.removeprefix("ALBENCH_SCALE "))}


# -- the table


def table(rows: list[dict], start: float) -> str:
    head = (
        "| path | trials | wall s | trials' own s | wall / trial s | driver busy | floor wall s (before, after) "
        "| albench / floor "
        "| no-op re-run s | beyond start-up s | status s | table s | report s |\n" + "| --- " * 13 + "|\n"
    )
    lines = []
    base = {r["path"]: r["run"]["wall"] / r["n"] for r in rows if r["n"] == 100}
    for r in rows:
        run, per = r["run"], r["run"]["wall"] / r["n"]
        floor_wall = r.get("floor", {}).get("wall")
        ratio = f"{run['wall'] / floor_wall:.2f}x" if floor_wall else "-"
        runs = r.get("floor", {}).get("runs", [])
        shown = f"{floor_wall:.1f}" if floor_wall else "-"
        shown += f" ({runs[0]['wall']:.0f}, {runs[1]['wall']:.0f})" if runs else ""
        growth = f" ({per / base[r['path']]:.2f}x at 100)" if r["path"] in base and r["n"] != 100 else ""
        lines.append(
            f"| {r['path']} | {r['n']} | {run['wall']:.1f} | {r['own']:.1f} | {per:.3f}{growth} | "
            f"{run['cpu'] / run['command']:.0%} | {shown} | {ratio} | {r['noop']['wall']:.1f} | "
            f"{r['noop']['wall'] - start:.1f} | {r['status']:.1f} | {r['table']:.1f} | {r['report']:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25,100,400", help="trial counts, multiples of 4 (1600 is opt-in)")
    parser.add_argument("--paths", default="ray,in-process")
    parser.add_argument("--checkout", default=str(Path(__file__).resolve().parent.parent), help="albench to measure")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-Tune floor")
    parser.add_argument("--write", action="store_true", help="write bench/results/scale.md")
    parser.add_argument(
        "--profile", type=float, default=0, help="py-spy the Ray driver for this many seconds at the largest size"
    )
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)  # internal: one floor run in this process
    parser.add_argument("--floor-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-round-s", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        out = run_floor(args.floor, N_ROUNDS, args.floor_bytes, args.floor_round_s)
        print("ALBENCH_SCALE " + json.dumps(out), flush=True)
        return
    checkout = Path(args.checkout).resolve()
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    start = start_up(checkout)
    print(f"albench at {sha.stdout.strip()} ({checkout}); start-up (the imports of `albench run`) {start:.1f} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [int(s) for s in args.sizes.split(",")]
        probe = measure_albench(checkout, 8, "in-process", Path(tmp))  # a trial's seconds a round, checkpoint size
        shape = (probe["bytes"], probe["own"] / (8 * N_ROUNDS))
        for n in sizes:
            for path in args.paths.split(","):
                profile_s = args.profile if path == "ray" and n == max(sizes) else 0
                # the floor on both sides of albench's run: this machine's speed drifts over minutes
                before = floor(n, *shape) if path == "ray" and not args.no_floor else None
                row = {"n": n, "path": path, **measure_albench(checkout, n, path, Path(tmp), profile_s)}
                if before is not None:
                    shape = (row["bytes"], row["own"] / (n * N_ROUNDS))
                    after = floor(n, *shape)
                    row["floor"] = {"wall": (before["wall"] + after["wall"]) / 2, "runs": [before, after]}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)
    text = (
        f"# bench.scale: `albench run` on growing grids of tiny trials, beside a bare-Tune floor\n\n"
        f"{machine_header(1)}\n\nalbench at {sha.stdout.strip()}; command: `python -m bench.scale "
        f"--sizes {args.sizes} --paths {args.paths}`; floor: the mean of a bare-Tune run just before "
        f"and one just after albench's; start-up (a process importing what `albench run` imports) "
        f"{start:.1f} s\n\n{table(rows, start)}"
    )
    for row in rows:
        if "profile" in row:
            text += f"\nThe Ray driver at {row['n']} trials, {args.profile:.0f} s of py-spy from a third of them on: "
            text += row["profile"]
    print(text)
    if args.write:
        print(f"wrote {write_result('scale', text)}")


if __name__ == "__main__":
    main()
