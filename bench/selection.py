"""Time and peak memory of one global selection (coreset, BADGE, BAIT, FisherMask) and how they grow.

Usage: .venv/bin/python -m bench.selection [--threads 2] [--quick]
Part 1 is one query on the real CIFAR-10 subset pool (all 5,085 train images: 200 labeled, b = 200) with the
benchmark grid's small CNN after 2 epochs on the labeled set: the map (features) and the select are timed
apart. Part 2 grows one dimension at a time on random features of the right shapes (the selections' cost
depends on the shapes, not the values): the pool N, the classes C and the Fisher feature size K.
Each measurement runs in a fresh process; "peak MiB" is the peak RSS during the select above the RSS at its start.
Writes bench/results/selection.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from bench.environment import PeakRss, machine_header, write_result
from strategies.fisher_greedy import greedy_bytes


def _timed_select(strategy, merged, b, labeled) -> dict:
    with PeakRss() as peak:
        start = time.perf_counter()
        picks = strategy.select(merged, b, labeled, selection_key=1)
        seconds = time.perf_counter() - start
    assert len(np.unique(picks)) == b
    return {"select_s": seconds, "peak_mib": peak.rise_mib}


def real_pool_case(name: str) -> dict:
    """One query of `name` over the whole CIFAR-10 subset pool."""
    from bench.environment import CIFAR10_SUBSET
    from experiments.datasets import load_dataset
    from experiments.defaults import DEFAULTS, resolve_train
    from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec
    from models.training import train_round
    from orchestrator.engine.streams import generator
    from orchestrator.engine.trial import TrialContext, build_networks, initial_state
    from strategies import resolve_strategy
    from strategies.base import merge_shards

    dataset = load_dataset("cifar10", CIFAR10_SUBSET)
    spec = TrialSpec(
        experiment="bench",
        dataset=DatasetSpec(name="cifar10"),
        model="small_cnn",
        regime_name="bench",
        regime=RegimeSpec(initial=200, query=200, subset=None, budget=400),
        strategy=resolve_strategy(
            name,
            {},
            resolve_train(DEFAULTS["cifar10"].train, {"epochs": 2, "batch_size": 64}),
            DEFAULTS["cifar10"].train,
        ),
        seed=0,
        train=resolve_train(DEFAULTS["cifar10"].train, {"epochs": 2, "batch_size": 64}),
    )
    ctx = TrialContext.create(spec, dataset, "cpu")
    nets = build_networks(spec, dataset, ctx.strategy, "cpu")
    state = initial_state(spec, dataset)
    labeled = torch.nonzero(state.labeled_round >= 0).flatten().numpy()
    train_round(
        nets, ctx.images, ctx.labels, labeled, spec.train, ctx.strategy.objective, ctx.normalize,
        generator(0, 0, "order"), generator(0, 0, "augment"),
    )  # fmt: skip
    subset = np.setdiff1d(np.arange(dataset.n_train), labeled)
    candidates = np.sort(ctx.strategy.candidates(subset, labeled))
    make_inputs = lambda idx: ctx.scoring_inputs(nets, idx, 0)  # noqa: E731
    start = time.perf_counter()
    strategy = ctx.strategy.prepare(make_inputs, candidates, 1)
    prepared = time.perf_counter()
    merged = merge_shards([strategy.reduce(strategy.score(make_inputs(candidates)), 200)])
    mapped = time.perf_counter()
    out = _timed_select(strategy, merged, 200, labeled)
    features = merged.features.shape[1] if merged.features is not None else 0
    return {"prepare_s": prepared - start, "map_s": mapped - prepared, "n": len(candidates), "d": features, **out}


def synthetic_case(name: str, n: int, c: int, k: int, b: int) -> dict:
    """A select over n points (10% labeled) of random features shaped as `name`'s map returns them."""
    from strategies import build_strategy
    from strategies.base import ShardResult

    rng = np.random.default_rng(0)
    pool = np.arange(n)
    labeled = pool[: n // 10]
    if name == "coreset":
        merged = ShardResult(pool, features=rng.normal(size=(n, k)).astype(np.float32))
    elif name == "badge":
        logits = rng.normal(size=(n, c))
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        h = np.abs(rng.normal(size=(n, k)))
        merged = ShardResult(pool, features=np.concatenate([p, h], 1).astype(np.float32), factor_split=c)
    else:  # the Fisher greedy on [n, c, k] factors, as fishermask's select runs it
        from strategies.fishermask import FisherMaskStrategy

        v = rng.normal(size=(n, c, k)).astype(np.float32)
        merged = ShardResult(pool, features=v.reshape(n, -1), factor_split=c)
        return _timed_select(FisherMaskStrategy(), merged, b, labeled) | {
            "theory_mib": greedy_bytes(n, n - len(labeled), c, k) / 2**20
        }
    return _timed_select(build_strategy(name), merged, b, labeled)


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    case = json.loads(args.case)
    kind = case.pop("kind")
    result = real_pool_case(**case) if kind == "pool" else synthetic_case(**case)
    print(json.dumps(result))


def _run(case: dict, threads: int) -> dict:
    cmd = [sys.executable, "-m", "bench.selection", "--threads", str(threads), "--case", json.dumps(case)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="part 2 only, smaller sizes (a smoke run)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return _child(args)
    lines = [f"# Selection time and memory ({machine_header(args.threads)})", ""]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    if not args.quick:
        from bench.environment import CIFAR10_SUBSET

        if not CIFAR10_SUBSET.exists():
            print(f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET}: part 1 skipped", file=sys.stderr)
        else:
            emit("## One query on the CIFAR-10 subset pool (5,085 images, 200 labeled, b = 200, small CNN)")
            emit("")
            emit("| strategy | points | features per point | mask (prepare) s | map s | select s | select peak MiB |")
            emit("|---|---:|---:|---:|---:|---:|---:|")
            for name in ("coreset", "badge", "bait", "fishermask"):
                r = _run({"kind": "pool", "name": name}, args.threads)
                emit(
                    f"| {name} | {r['n']:,} | {r['d']:,} | {r['prepare_s']:.1f} | {r['map_s']:.1f} | "
                    f"{r['select_s']:.1f} | {r['peak_mib']:.0f} |"
                )
            emit("")
    scale = 0.5 if args.quick else 1.0

    def n(v: int) -> int:
        return int(v * scale)

    growth = [
        ("coreset: pool N (d = 512, b = 200)", "coreset", [(n(v), 10, 512, 200) for v in (5000, 20000, 50000)]),
        ("badge: pool N (C = 10, d = 256, b = 200)", "badge", [(n(v), 10, 256, 200) for v in (2500, 10000, 40000)]),
        ("Fisher greedy: pool N (C = 10, K = 1,280)", "fisher", [(n(v), 10, 1280, 50) for v in (500, 1000, 2000)]),
        ("Fisher greedy: classes C (N = 1,000, K = 1,280)", "fisher", [(n(1000), c, 1280, 50) for c in (5, 10, 20)]),
        ("Fisher greedy: features K (N = 1,000, C = 10)", "fisher", [(n(1000), 10, k, 50) for k in (640, 1280, 2560)]),
    ]
    emit("## Growth of the select alone (random features, 10% of N labeled)")
    for title, name, cases in growth:
        emit("")
        emit(f"### {title}")
        emit("")
        emit("| N | C | d or K | b | select s | peak MiB | estimate MiB (Fisher: greedy_bytes) |")
        emit("|---:|---:|---:|---:|---:|---:|---:|")
        for n, c, k, b in cases:
            r = _run({"kind": "synthetic", "name": name, "n": n, "c": c, "k": k, "b": b}, args.threads)
            theory = f"{r['theory_mib']:.0f}" if "theory_mib" in r else ""
            emit(f"| {n:,} | {c} | {k:,} | {b} | {r['select_s']:.2f} | {r['peak_mib']:.0f} | {theory} |")
    if not args.quick:
        print(f"written to {write_result('selection', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
