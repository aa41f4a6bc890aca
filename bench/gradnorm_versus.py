"""Gradient-norm scoring against a plain forward + backward, in this checkout and in another, alternately.

Usage: .venv/bin/python -m bench.gradnorm_versus --before DIR [--runs 2] [--threads 2]
DIR is another checkout of albench (e.g. `git worktree add /tmp/before <commit>`). Each run measures, in a fresh
process per checkout, `bench.gradnorm.throughput_rows` for ResNet-18 and the small CNN at batch 64 and 256: b
(per_sample_grad_norms) and d (a forward + backward) interleaved in that process, so each b/d is a ratio measured
side by side; the two checkouts alternate so that a drift of the machine's speed hits both. Prints one row per
run and checkout. Writes bench/results/gradnorm-versus.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.environment import machine_header, write_result

CASES = [("resnet18", 64), ("resnet18", 256), ("small_cnn", 64), ("small_cnn", 256)]
PROBE = """
import json, sys, torch
torch.set_num_threads({threads})
from bench.gradnorm import throughput_rows
rows = {{}}
for model, batch in {cases}:
    r = throughput_rows(model, batch, 8, repeats=4)
    rows[f"{{model}}/{{batch}}"] = r["b"] / r["d"]
print(json.dumps(rows))
"""


def measure(checkout: Path, threads: int) -> dict[str, float]:
    code = PROBE.format(threads=threads, cases=CASES)
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit(checkout: Path) -> str:
    """The checkout's commit, with '+changes' where its tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=checkout).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="another checkout of albench")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    lines = [f"# Gradient-norm scoring, b/d, before and after ({machine_header(args.threads)})", ""]
    lines.append(f"before: {args.before.resolve()} at {_commit(args.before)}; after: {here} at {_commit(here)}")
    lines += ["", "| run | checkout | " + " | ".join(f"{m} batch {b}" for m, b in CASES) + " |"]
    lines.append("|---|---|" + "---:|" * len(CASES))
    print("\n".join(lines), flush=True)
    for run in range(1, args.runs + 1):
        for name, checkout in (("before", args.before), ("after", here)):
            ratios = measure(checkout, args.threads)
            row = f"| {run} | {name} | " + " | ".join(f"{ratios[f'{m}/{b}']:.2f}" for m, b in CASES) + " |"
            print(row, flush=True)
            lines.append(row)
    print(f"written to {write_result('gradnorm-versus', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
