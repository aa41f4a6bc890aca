"""Two round-0 groups whose fits take very different times, through Ray: the grid's wall time with every fit
first and a barrier before any trial (albench at c691cd3: a Tune run of fits, then one of trials) beside one Tune
run that releases each trial as soon as its own group's fit is filed (this checkout), alternating in one run.

Usage: .venv/bin/python -m bench.release [--repeats 2] [--before DIR] [--write]
`--before`: a checkout of c691cd3 (default: a temporary `git worktree` of it). Each `albench run` is a process
of its own on a fresh results folder (local Ray, 1 CPU per trial), timed from its start to its exit; "first fast
trial" is when the first trial of the fast group started (its checkpoint's `started_at`), after the run's start,
and "slow fit filed" when the slow group's fit was filed (its ledger file's time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.environment import machine_header, write_result
from bench.scale import albench

BEFORE = "c691cd3"
GRID = {
    "name": "release",
    "datasets": ["digits"],
    "model": "small_cnn",
    # round 0 trains on 20 images in one group and on 1,000 in the other (50-fold)
    "regimes": {
        "fast": {"initial": 20, "query": 20, "subset": 200, "budget": 100},
        "slow": {"initial": 1000, "query": 20, "subset": 200, "budget": 1020},
    },
    "strategies": ["random", "entropy", "margin", "least_confidence"],
    "seeds": [0],
    "train": {"epochs": 15},
    "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
}


def timestamps(results: Path, started: float) -> dict[str, float]:
    """Seconds after the run's start: the first fast trial's start and the slow group's fit filing."""
    firsts = []
    for entry in (results / "trials").glob("*.json"):
        data = json.loads(entry.read_text())
        if "/fast/" in data["label"] and data["checkpoint"]:
            folder = results / data["checkpoint"]  # a relative path is inside the results folder
            records = json.loads((folder / "records.json").read_text())
            firsts.append(float(records["extra"]["started_at"]))
    slow = max((p.stat().st_mtime for p in (results / "round0").glob("*.json")), default=float("nan"))
    return {"first_fast_trial": min(firsts) - started, "slow_fit_filed": slow - started}


def measure(checkout: Path, grid_file: Path, results: Path) -> dict:
    started = time.time()
    out = albench(checkout, "run", str(grid_file), "--results", str(results), "--tracking-uri", "none")
    return {"wall": out["wall"], **timestamps(results, started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", help=f"a checkout of {BEFORE} (default: a temporary git worktree)")
    parser.add_argument("--write", action="store_true", help="write bench/results/release.md")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(args.before) if args.before else Path(tmp) / "before"
        if not args.before:
            subprocess.run(["git", "worktree", "add", "--detach", str(before), BEFORE], cwd=here, check=True)
        grid_file = Path(tmp) / "release.yaml"
        grid_file.write_text(yaml.safe_dump(GRID))
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        try:
            for i in range(args.repeats):  # alternating: this machine's speed drifts over minutes
                for side, checkout in (("before", before), ("after", here)):
                    runs[side].append(measure(checkout, grid_file, Path(tmp) / f"{side}-{i}"))
                    print(side, json.dumps(runs[side][-1]), flush=True)
        finally:
            if not args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=here, check=False)
    median = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    lines = [
        "| albench | wall s (each run) | median wall s | first fast trial started, s after start | "
        "slow fit filed, s after start |",
        "| --- | --- | --- | --- | --- |",
    ]
    for side, label in (("before", f"{BEFORE}: fits first, then trials"), ("after", f"{sha.stdout.strip()}: one run")):
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs[side])
        m = median[side]
        lines.append(
            f"| {label} | {walls} | {m['wall']:.1f} | {m['first_fast_trial']:.1f} | {m['slow_fit_filed']:.1f} |"
        )
    ratio = median["after"]["wall"] / median["before"]["wall"]
    text = (
        "# bench.release: two round-0 groups, a fast fit (20 images) and a slow one (1,000), through Ray\n\n"
        f"{machine_header(1)}\n\ncommand: `python -m bench.release --repeats {args.repeats}`; grid: digits, small CNN, "
        "15 epochs, 4 strategies x 1 seed x 2 regimes (8 trials, 2 fits), local Ray, 1 CPU per trial\n\n"
        + "\n".join(lines)
        + f"\n\nafter / before (median wall): {ratio:.2f}x\n"
    )
    print(text)
    if args.write:
        print(f"wrote {write_result('release', text)}")


if __name__ == "__main__":
    main()
