"""The pilot of the CIFAR-10-subset benchmark: how far one round's training fits its labeled set, by epochs.

Usage: .venv/bin/python -m bench.convergence [--labels 200,1000] [--epochs 40,80,120,200] [--seeds 3]
                                             [--batch 32] [--precision bf16] [--model small_cnn] [--threads 2]
                                             [--out convergence]
For each labeled-set size (the subset grid's first and last round) and number of epochs, a round is trained from
the trial's initial weights with albench's own engine: the seed's initial weights and a random labeled set from
its streams, CIFAR's schedule shortened to the epochs (LR 0.1, x0.1 after 80 % of them), crop + flip. Each seed
trains twice, paired (same weights, set, order and augmentation): with cross-entropy (ent_gradnorm's objective)
and jointly with the loss-prediction module (lplgrad's), so their difference is the module's cost. Prints train
and test accuracy (mean ± std over seeds), the paired difference and the seconds per 100k training image
passes, and writes bench/results/<out>.md, with each seed's paired row below the means.
Each seed's result is also kept in bench/results/<out>.seeds.json with the CPU model it ran on: a later run with
more seeds on the same CPU model reruns only the new seeds (a CPU run is deterministic, so the old ones would
repeat bit for bit); on another CPU model every seed runs again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.environment import CIFAR10_SUBSET, RESULTS, machine_header, write_result
from experiments.datasets import load_dataset
from experiments.defaults import DEFAULTS, resolve_train
from experiments.specs import DatasetSpec, RegimeSpec, TrialSpec
from models.augment import Normalizer
from models.evaluation import evaluate
from models.training import train_round
from orchestrator.engine.provenance import cpu_model
from orchestrator.engine.streams import generator
from orchestrator.engine.trial import build_networks
from strategies import build_strategy, resolve_strategy

STRATEGIES = ("ent_gradnorm", "lplgrad")  # cross-entropy, and cross-entropy + the loss-prediction module


def one_round(dataset, model: str, n_labeled: int, epochs: int, batch: int, precision: str, seed: int) -> dict:
    """Train and test accuracy of both objectives after one round on `n_labeled` images, and the seconds."""
    reference = DEFAULTS["cifar10"].train
    train = resolve_train(reference, {"epochs": epochs, "batch_size": batch, "precision": precision})
    regime = RegimeSpec(initial=n_labeled, query=n_labeled, budget=n_labeled)
    normalize = Normalizer(dataset.mean, dataset.std)
    labeled = torch.randperm(dataset.n_train, generator=generator(seed, 0, "initial"))[:n_labeled].sort().values
    out = {}
    for name in STRATEGIES:
        spec = TrialSpec(
            experiment="pilot",
            dataset=DatasetSpec(name="cifar10"),
            model=model,
            regime_name="pilot",
            regime=regime,
            strategy=resolve_strategy(name, {}, train, reference),
            seed=seed,
            train=train,
        )
        strategy = build_strategy(spec.strategy)
        nets = build_networks(spec, dataset, strategy, "cpu")
        start = time.perf_counter()
        train_round(
            nets,
            dataset.train_images,
            dataset.train_labels,
            labeled.numpy(),
            train,
            strategy.objective,
            normalize,
            generator(seed, 0, "order"),
            generator(seed, 0, "augment"),
        )
        seconds = time.perf_counter() - start
        fit = evaluate(nets.backbone, dataset.train_images[labeled], dataset.train_labels[labeled], normalize, 10)
        test = evaluate(nets.backbone, dataset.test_images, dataset.test_labels, normalize, 10)
        out[name] = {"train": fit.accuracy, "test": test.accuracy, "s_per_100k": seconds / (n_labeled * epochs) * 1e5}
    return out


class SeedCache:
    """Each finished seed's result, by its settings, for the CPU model that computed it: a long pilot extends."""

    def __init__(self, path: Path, cpu: str) -> None:
        self.path, self.cpu = path, cpu
        kept = json.loads(path.read_text()) if path.exists() else {}
        self.runs: dict[str, dict] = kept.get("runs", {}) if kept.get("cpu") == cpu else {}

    def get(self, key: str) -> dict | None:
        return self.runs.get(key)

    def put(self, key: str, result: dict) -> None:
        self.runs[key] = result
        self.path.write_text(json.dumps({"cpu": self.cpu, "runs": self.runs}, indent=1, sort_keys=True) + "\n")


def _ms(values: list[float]) -> str:
    return (
        f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", default="200,1000")
    parser.add_argument("--epochs", default="40,80,120,200")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="convergence", help="bench/results/<out>.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset("cifar10", CIFAR10_SUBSET)
    lines = [
        f"# Convergence pilot ({machine_header(args.threads)})",
        "",
        f"CIFAR-10 subset ({dataset.n_train} train / {len(dataset.test_labels)} test images), {args.model}, batch "
        f"{args.batch}, {args.precision}, CIFAR's schedule shortened to the epochs (LR 0.1, x0.1 after 80 %), crop + "
        f"flip; one round from the trial's initial weights, {args.seeds} seeds (mean ± std). CE: cross-entropy "
        "(ent_gradnorm's training); +LPL: jointly with the loss-prediction module (lplgrad's), paired by seed. "
        "Train accuracy is on the labeled set, eval mode. Command: `python -m bench.convergence "
        f"--labels {args.labels} --epochs {args.epochs} --seeds {args.seeds} --batch {args.batch} "
        f"--precision {args.precision} --model {args.model} --threads {args.threads}`.",
        "",
        "| labels | epochs | CE train acc % | CE test acc % | +LPL train acc % | +LPL test acc % | "
        "paired Δ test (LPL − CE) | s / 100k passes (CE) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    cache = SeedCache(RESULTS / f"{args.out}.seeds.json", cpu_model())
    per_seed = [
        "",
        "Each seed (accuracy %, paired):",
        "",
        "| labels | epochs | seed | CE train | CE test | +LPL train | +LPL test | Δ test |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n_labeled in [int(n) for n in args.labels.split(",")]:
        for epochs in [int(e) for e in args.epochs.split(",")]:
            runs = []
            for seed in range(args.seeds):  # each seed as it ends: a long pilot shows its progress
                key = f"{args.model}/{args.precision}/batch{args.batch}/{n_labeled}/{epochs}/seed{seed}"
                if (result := cache.get(key)) is None:
                    result = one_round(dataset, args.model, n_labeled, epochs, args.batch, args.precision, seed)
                    cache.put(key, result)
                runs.append(result)
                print(f"  seed {seed}, {n_labeled} labels, {epochs} epochs: {result}", flush=True)
                ce_run, lpl_run = result["ent_gradnorm"], result["lplgrad"]
                per_seed.append(
                    f"| {n_labeled:,} | {epochs} | {seed} | {100 * ce_run['train']:.1f} | {100 * ce_run['test']:.2f} | "
                    f"{100 * lpl_run['train']:.1f} | {100 * lpl_run['test']:.2f} | "
                    f"{100 * (lpl_run['test'] - ce_run['test']):+.2f} |"
                )
            ce, lpl = [r["ent_gradnorm"] for r in runs], [r["lplgrad"] for r in runs]
            delta = [b["test"] - a["test"] for a, b in zip(ce, lpl, strict=True)]
            row = (
                f"| {n_labeled:,} | {epochs} | {_ms([r['train'] for r in ce])} | {_ms([r['test'] for r in ce])} | "
                f"{_ms([r['train'] for r in lpl])} | {_ms([r['test'] for r in lpl])} | "
                f"{100 * np.mean(delta):+.1f} ± {100 * np.std(delta, ddof=1):.1f} | "
                f"{np.median([r['s_per_100k'] for r in ce]):.0f} |"
            )
            lines.append(row)
            print(row, flush=True)
    lines += per_seed
    print(f"written to {write_result(args.out, chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
