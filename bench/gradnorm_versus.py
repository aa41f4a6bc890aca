"""Gradient-norm scoring against a plain forward + backward, in this checkout and in another, alternately.

Usage: .venv/bin/python -m bench.gradnorm_versus --before DIR [--runs 2] [--threads 2] [--same-process]
DIR is another checkout of albench (e.g. `git worktree add /tmp/before <commit>`). Each run measures, in a fresh
process per checkout, `bench.gradnorm.throughput_rows` for ResNet-18 and the small CNN at batch 64 and 256: b
(per_sample_grad_norms) and d (a forward + backward) interleaved in that process, so each b/d is a ratio measured
side by side; the two checkouts alternate so that a drift of the machine's speed hits both. Prints one row per
run and checkout.

Then both passes side by side in one process (`--same-process`, at 2 threads and at 1): the other checkout's
strategies/gradnorm.py loaded by its path next to this one's, before, after and the forward + backward interleaved,
best of several. Separate processes differ by more than the passes do (heap state, where the machine's load
falls): this table is the tighter comparison. It needs the other checkout's gradnorm.py to import only torch and
the standard library, as it did before the per-layer forms (93d9b53). Writes bench/results/gradnorm-versus.md.
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


SIDE_BY_SIDE = """
import importlib.util, json, torch
torch.set_num_threads({threads})
from torch.distributions import Categorical
from bench.gradnorm import _images, _normalise, _timed
from models import build_model
import strategies.gradnorm as after
spec = importlib.util.spec_from_file_location("before_gradnorm", {path!r})
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)
rows = {{}}
for model_name, batch in {cases}:
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3).eval()
    x = _normalise(_images(batch))

    def forward_backward():
        model.zero_grad()
        Categorical(logits=model(x).logits).entropy().mean().backward()

    fns = {{"before": lambda: before.per_sample_grad_norms(model, x),
           "after": lambda: after.per_sample_grad_norms(model, x), "d": forward_backward}}
    torch.testing.assert_close(fns["before"](), fns["after"](), rtol=1e-3, atol=0)
    best = {{key: float("inf") for key in fns}}
    for fn in fns.values():
        fn()
    for _ in range(25 if model_name == "small_cnn" else 5):
        for key, fn in fns.items():
            best[key] = min(best[key], _timed(fn))
    rows[f"{{model_name}}/{{batch}}"] = [best["d"] / best["before"], best["d"] / best["after"]]
print(json.dumps(rows))
"""


def side_by_side(before: Path, threads: int) -> dict[str, list[float]]:
    """b/d of the other checkout's pass and of this one's, measured interleaved in one fresh process."""
    source = before.resolve() / "strategies" / "gradnorm.py"
    code = SIDE_BY_SIDE.format(threads=threads, cases=CASES, path=str(source))
    here = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"could not load {source} next to this checkout's scoring (it must import only torch and the standard "
            f"library); run without --same-process.\n{done.stderr[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--same-process", action="store_true", help="also both passes in one process")
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
    if args.same_process:
        lines += ["", "Side by side in one process (b/d before / after):", ""]
        lines.append("| threads | " + " | ".join(f"{m} batch {b}" for m, b in CASES) + " |")
        lines.append("|---|" + "---:|" * len(CASES))
        print("\n".join(lines[-4:]), flush=True)
        for threads in (2, 1):
            ratios = side_by_side(args.before, threads)
            cells = " | ".join("{:.2f} / {:.2f}".format(*ratios[f"{m}/{b}"]) for m, b in CASES)
            print(f"| {threads} | {cells} |", flush=True)
            lines.append(f"| {threads} | {cells} |")
    print(f"written to {write_result('gradnorm-versus', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
