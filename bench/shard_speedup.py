"""Speed-up of sharded pool scoring: one query on the real CIFAR-10 subset, 1 shard vs 2 (a Ray actor each extra).

Usage: .venv/bin/python -m bench.shard_speedup [--strategy ent_gradnorm] [--subset 2000] [--model resnet18]
Each shard gets one CPU thread, as `scoring_shards: k` with `cpus_per_trial: 1` gives it; a 1-shard query
with 2 threads is shown too. The picks of every configuration are checked equal.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.environment import CIFAR10_SUBSET
from experiments.datasets import load_dataset
from experiments.defaults import DEFAULTS, resolve_train
from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec
from models.augment import Normalizer
from orchestrator.engine.trial import TrialContext, build_networks, query
from orchestrator.run.shards import ShardPool
from strategies import resolve_strategy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", default="ent_gradnorm")
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    dataset = load_dataset("cifar10", CIFAR10_SUBSET)
    spec = TrialSpec(
        experiment="bench",
        dataset=DatasetSpec(name="cifar10"),
        model=args.model,
        regime_name="bench",
        regime=RegimeSpec(initial=200, query=200, subset=args.subset, budget=400),
        strategy=resolve_strategy(
            args.strategy, {}, resolve_train(DEFAULTS["cifar10"].train, {"epochs": 1}), DEFAULTS["cifar10"].train
        ),
        seed=0,
        train=resolve_train(DEFAULTS["cifar10"].train, {"epochs": 1}),
    )
    ctx = TrialContext.create(spec, dataset, "cpu")
    nets = build_networks(spec, dataset, ctx.strategy, "cpu")
    rng = np.random.default_rng(0)
    pool = rng.permutation(dataset.n_train)
    labeled, subset = np.sort(pool[:200]), np.sort(pool[200 : 200 + args.subset])

    def timed(n_shards, mapper, threads):
        torch.set_num_threads(threads)
        times, picks = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            kwargs = {"map_shards": mapper} if mapper else {}
            picks = query(
                ctx.strategy, lambda idx: ctx.scoring_inputs(nets, idx, 0), subset, labeled, 200, n_shards, **kwargs
            )
            times.append(time.perf_counter() - start)
        return min(times), picks

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    shards = ShardPool(
        spec, dataset.train_images, Normalizer(dataset.mean, dataset.std), dataset.n_classes, 2, {"CPU": 1}
    )
    rows = [
        ("1 shard, 1 thread", *timed(1, None, 1)),
        ("1 shard, 2 threads", *timed(1, None, 2)),
        ("2 shards, 1 thread each", *timed(2, shards, 1)),
    ]
    ray.shutdown()
    base = rows[0][1]
    print(f"{args.strategy} on {args.model}: scoring {args.subset} CIFAR-10 subset images, best of {args.repeats}")
    print(f"{'configuration':26} {'seconds':>8} {'images/s':>9} {'speed-up':>9} {'same picks':>11}")
    for name, seconds, picks in rows:
        same = np.array_equal(picks, rows[0][2])
        print(f"{name:26} {seconds:8.1f} {args.subset / seconds:9.1f} {base / seconds:9.2f} {str(same):>11}")


if __name__ == "__main__":
    main()
