"""Pool-scoring throughput of the gradient-norm query against the reference loop, and its memory bound.

Usage: .venv/bin/python -m bench.gradnorm [--threads 2] [--batch 64]
Samples/s of, on CIFAR-size 32x32 images (the real CIFAR-10 subset where present, else random images):
  (a) the reference loop: one image at a time, Categorical(logits).entropy(), backward, per-tensor norms summed;
  (b) albench's per_sample_grad_norms (exact, batched, hook-based);
  (c) a batched forward + entropy, no gradients (the floor of any scoring);
  (d) a batched forward + backward of the mean entropy (what one ordinary training step costs).
and b/a, b/d. Then, per early conv shape, the two CPU forms of the per-sample weight gradient (one grouped
call, a call per sample) and which one albench's shape rule picks. Then time and peak memory of scoring
2,500 to 40,000 images (the subset repeated) through the strategy's map, chunk = `query.score_batch_size`,
each in a fresh process, in both scoring-heap modes (`resources.scoring_heap`): time grows linearly with the
pool; in `bounded` mode the peak is set by the chunk alone, in `fast` mode it varies by some tens of MiB
from pass to pass. Writes bench/results/gradnorm.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from torch.distributions import Categorical

from bench.environment import CIFAR10_SUBSET, PeakRss, machine_header, write_result
from models import build_model
from strategies.gradnorm import per_sample_grad_norms


def _images(n: int) -> torch.Tensor:
    """n normalised 32x32 images: the real CIFAR-10 subset, repeated if n is larger, else random."""
    if CIFAR10_SUBSET.exists():
        from experiments.datasets import load_dataset

        data = load_dataset("cifar10", CIFAR10_SUBSET).train_images
    else:
        print(f"the real CIFAR-10 subset is not at {CIFAR10_SUBSET}: random images", file=sys.stderr)
        data = torch.randint(0, 256, (5085, 3, 32, 32), dtype=torch.uint8)
    reps = -(-n // len(data))
    return data.repeat(reps, 1, 1, 1)[:n]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.5) / 0.25


def reference_loop(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The public code's scoring: per image, forward, entropy, backward, sum of per-tensor gradient norms."""
    scores = []
    for i in range(len(x)):
        model.zero_grad()
        logits = model(x[i : i + 1]).logits
        Categorical(logits=logits).entropy().sum().backward()
        scores.append(sum(p.grad.norm() for p in model.parameters() if p.grad is not None).item())
    return torch.tensor(scores)


def _rate(fn, n: int, repeats: int = 2) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    """Seconds of fn, its GPU work included (CUDA runs asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughput_rows(model_name: str, batch: int, loop_n: int, repeats: int = 5, device: str = "cpu") -> dict:
    """Samples/s of a (the one-sample loop), b (albench), c (a plain forward), d (forward + backward)."""
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3).eval().to(device)
    x = _normalise(_images(batch)).to(device)
    xl = x[:loop_n]

    def forward_only():
        with torch.no_grad():
            Categorical(logits=model(x).logits).entropy()

    def forward_backward():
        model.zero_grad()
        Categorical(logits=model(x).logits).entropy().mean().backward()

    batched = {"b": lambda: per_sample_grad_norms(model, x), "c": forward_only, "d": forward_backward}
    best = {key: float("inf") for key in batched}
    for fn in batched.values():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved, best of each: the machine's speed drifts, a ratio must not
        for key, fn in batched.items():
            best[key] = min(best[key], _timed(fn))
    rates = {"a": _rate(lambda: reference_loop(model, xl), loop_n, repeats=1)}
    rates.update({key: batch / seconds for key, seconds in best.items()})
    ref = reference_loop(model, x[:8]).cpu()  # the loop's scores are built on the CPU, wherever the model is
    ours = per_sample_grad_norms(model, x[:8]).cpu()
    rates["max_rel_err"] = float(((ours - ref).abs() / ref.abs()).max())
    return rates


EARLY_CONVS = [  # (C_in, C_out, input size, stride, kernel): ResNet-18's and the small CNN's per-sample-gradient convs
    (3, 64, 32, 1, 3),
    (64, 64, 32, 1, 3),
    (64, 128, 32, 2, 3),
    (128, 128, 16, 1, 3),
    (64, 128, 32, 2, 1),
    (3, 32, 32, 1, 3),
    (32, 64, 32, 2, 3),
]


def early_conv_rows(batches: tuple[int, ...] = (64, 256), repeats: int = 3) -> list[str]:
    """Per conv shape: ms of the grouped call and of a call per sample, and which one albench uses on a CPU."""
    from torch import nn

    from strategies import gradnorm

    rows = []
    for batch in batches:
        for c_in, c_out, size, stride, k in EARLY_CONVS:
            conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)
            a = torch.randn(batch, c_in, size, size)
            g = torch.randn(batch, c_out, size // stride, size // stride)
            forms = {
                "grouped": lambda c=conv, a=a, g=g: (
                    gradnorm._per_sample_conv_weight_grad(c, a, g, c.padding).square().sum(1)
                ),
                "per sample": lambda c=conv, a=a, g=g: gradnorm._per_sample_conv_weight_sq_loop(c, a, g, c.padding),
            }
            best = {name: float("inf") for name in forms}
            for fn in forms.values():
                fn()
            for _ in range(repeats):
                for name, fn in forms.items():
                    best[name] = min(best[name], _timed(fn))
            used = "per sample" if conv.weight.numel() >= gradnorm.PER_SAMPLE_CALL_MIN_WEIGHT else "grouped"
            rows.append(
                f"| {batch} | {c_in}->{c_out} {k}x{k} s{stride} on {size}x{size} | {conv.weight.numel():,} | "
                f"{best['grouped'] * 1e3:.1f} | {best['per sample'] * 1e3:.1f} | "
                f"{best['per sample'] / best['grouped']:.2f} | {used} |"
            )
    return rows


def peak_memory_case(model_name: str, n: int, chunk: int, heap: str = "fast") -> dict:
    """Peak RSS while the ent_gradnorm map scores n images, chunk at a time (images already loaded)."""
    from models.augment import Normalizer
    from strategies import build_strategy
    from strategies.base import ScoringInputs
    from strategies.scoring_heap import run_scoring, set_scoring_heap

    set_scoring_heap(heap)
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3)
    images = _images(n)
    inputs = ScoringInputs(model, images, np.arange(n), Normalizer((0.5,) * 3, (0.25,) * 3), chunk, 0)
    strategy = build_strategy("ent_gradnorm")
    run_scoring(lambda: strategy.score(replace(inputs, images=images[:chunk], pool_indices=np.arange(chunk))))
    with PeakRss() as peak:
        start = time.perf_counter()
        run_scoring(lambda: strategy.score(inputs))
        seconds = time.perf_counter() - start
    return {
        "rise_mib": peak.rise_mib,
        "peak_mib": peak.peak_mib,
        "seconds": seconds,
        "images_mib": images.numel() / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--loop", type=int, default=32, help="images for the (slow) reference loop")
    parser.add_argument("--memory-model", default="small_cnn")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(peak_memory_case(**json.loads(args.case))))
        return
    device = "cpu"
    lines = [f"# Gradient-norm scoring ({machine_header(args.threads)})", ""]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit(f"## Throughput, samples/s ({device}, float32, batch {args.batch}, 32x32)")
    emit("")
    emit("| model | (a) reference loop | (b) per_sample_grad_norms | (c) forward only | (d) forward + backward "
         "| b/a | b/d | max rel. error b vs a |")  # fmt: skip
    emit("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("resnet18", "small_cnn"):
        r = throughput_rows(name, args.batch, args.loop)
        emit(
            f"| {name} | {r['a']:.1f} | {r['b']:.1f} | {r['c']:.1f} | {r['d']:.1f} | {r['b'] / r['a']:.2f} | "
            f"{r['b'] / r['d']:.2f} | {r['max_rel_err']:.1e} |"
        )
    emit("")
    emit("## Early convs on the CPU: one grouped weight-gradient call against a call per sample (ms, best of 3)")
    emit("")
    emit("| batch | conv | weights | grouped | per sample | per sample / grouped | albench uses |")
    emit("|---:|---|---:|---:|---:|---:|---|")
    for row in early_conv_rows():
        emit(row)
    emit("")
    emit(f"## Peak memory of scoring ({args.memory_model}, ent_gradnorm map, chunk = query.score_batch_size)")
    emit("")
    emit("| heap | images | chunk | seconds | images/s | peak RSS MiB | pool images (uint8) MiB | "
         "peak less images MiB | rise during the pass MiB |")  # fmt: skip
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    cases = [("fast", n, 256) for n in (2500, 10000, 25000, 40000)] + [("fast", n, 64) for n in (2500, 25000)]
    cases += [("bounded", n, 256) for n in (2500, 25000, 40000)] + [("bounded", n, 64) for n in (2500, 25000)]
    for heap, n, chunk in cases:
        case = json.dumps({"model_name": args.memory_model, "n": n, "chunk": chunk, "heap": heap})
        cmd = [sys.executable, "-m", "bench.gradnorm", "--threads", str(args.threads), "--case", case]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        emit(
            f"| {heap} | {n:,} | {chunk} | {r['seconds']:.1f} | {n / r['seconds']:.0f} | {r['peak_mib']:.0f} | "
            f"{r['images_mib']:.0f} | {r['peak_mib'] - r['images_mib']:.0f} | {r['rise_mib']:.0f} |"
        )
    print(f"written to {write_result('gradnorm', chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
