"""Fused training against the same trials trained one after another, on the CPU, side by side in one run.

Usage: .venv/bin/python -m bench.fused [--threads 2] [--device cpu]
For each model and group size K: K members (own seeds, own labeled sets of one size, own streams) trained for one
round one after another with `models.training.train_round`, and the same K fused with
`models.fused_training.train_round_fused`, interleaved, best of --repeats. Prints images/s over all members, the
fused / separate ratio, and how far the fused members' final losses are from the separate ones (float32).
On the CIFAR-10 subset (skipped with a message where it is absent). Writes bench/results/fused.md. On a GPU the
grid-level figures come from `python -m bench.gpu --parts fusion`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.environment import CIFAR10_SUBSET, machine_header, write_result
from experiments.specs import TrainSpec
from models import build_model
from models.augment import Normalizer
from models.fused_training import FusedMember, train_round_fused
from models.networks import Networks
from models.objective import CROSS_ENTROPY
from models.training import train_round

CASES = [("small_cnn", 1), ("small_cnn", 4), ("small_cnn", 8), ("resnet18", 4)]
LABELED = {"small_cnn": 512, "resnet18": 128}


def _members(model: str, k: int, n_train: int, device: str) -> list[FusedMember]:
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets = Networks(build_model(model, 10, 3).to(device))
        labeled = np.random.default_rng(seed).choice(n_train, LABELED[model], replace=False)
        members.append(
            FusedMember(nets, labeled, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(1000 + seed))
        )
    return members


def measure(model: str, k: int, data, device: str, repeats: int) -> dict[str, float]:
    """Seconds of a round: separately (best of `repeats`) and fused (best of `repeats`), and the loss difference."""
    train = TrainSpec(epochs=1, batch_size=64, lr=0.05, augment=True, crop_padding=4)
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    normalize = Normalizer(data.mean, data.std)
    best = {"separate": float("inf"), "fused": float("inf")}
    gap = 0.0
    for _ in range(repeats):
        members = _members(model, k, len(images), device)
        start = time.perf_counter()
        alone = [
            train_round(m.nets, images, labels, m.labeled, train, CROSS_ENTROPY, normalize, m.order, m.augment)
            for m in members
        ]
        best["separate"] = min(best["separate"], time.perf_counter() - start)
        members = _members(model, k, len(images), device)
        start = time.perf_counter()
        fused = train_round_fused(members, images, labels, train, CROSS_ENTROPY, normalize)
        best["fused"] = min(best["fused"], time.perf_counter() - start)
        gap = max(
            gap, max(abs(f.final_loss - a.final_loss) / abs(a.final_loss) for f, a in zip(fused, alone, strict=True))
        )
    images_per_round = k * LABELED[model] * train.epochs
    return {
        "separate": images_per_round / best["separate"],
        "fused": images_per_round / best["fused"],
        "loss_gap": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (CIFAR10_SUBSET / "cifar-10-batches-py").is_dir():
        print(f"skipped: the CIFAR-10 subset is not at {CIFAR10_SUBSET}")
        return
    from experiments.datasets import load_dataset

    data = load_dataset("cifar10", CIFAR10_SUBSET)
    lines = [f"# Fused training against separate training ({machine_header(args.threads)}; device {args.device})", ""]
    lines += [
        "One round, 1 epoch, batch 64, augmented, float32; images/s over all K members; best of "
        f"{args.repeats}, interleaved.",
        "",
        "| model | K | labeled per member | separate images/s | fused images/s | fused / separate | max loss gap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for model, k in CASES:
        r = measure(model, k, data, args.device, args.repeats)
        row = (
            f"| {model} | {k} | {LABELED[model]} | {r['separate']:.0f} | {r['fused']:.0f} | "
            f"{r['fused'] / r['separate']:.2f} | {r['loss_gap']:.1e} |"
        )
        print(row, flush=True)
        lines.append(row)
    print(f"written to {write_result('fused', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
