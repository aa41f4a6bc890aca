"""Pool-scoring throughput of the gradient-norm query against the reference loop, and its memory bound.

Usage: .venv/bin/python -m bench.gradnorm [--threads 2] [--batch 64]
Samples/s of, on CIFAR-size 32x32 images (the real CIFAR-10 subset where present, else random images):
  (a) the reference loop: one image at a time, Categorical(logits).entropy(), backward, per-tensor norms summed;
  (b) albench's per_sample_grad_norms (exact, batched, hook-based);
  (c) a batched forward + entropy, no gradients (the floor of any scoring);
  (d) a batched forward + backward of the mean entropy (what one ordinary training step costs).
and b/a, b/d. Then, per distinct ResNet-18 conv, every exact form of its per-sample weight-gradient norm side
by side (strategies/layer_norms.py), the one albench's cost model picks (strategies/norm_forms.py) and the
fastest. Then time and peak memory of scoring
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
from torch import nn
from torch.distributions import Categorical

from bench.environment import CIFAR10_SUBSET, PeakRss, machine_header, write_result
from models import build_model
from strategies.gradnorm import per_sample_grad_norms
from strategies.layer_norms import CONV_FORMS, GRAM_FORMS, ConvGeometry, conv_weight_sq
from strategies.norm_forms import choose_conv_form, device_model


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


def conv_geometries(model_name: str, size: int = 32) -> list[tuple[nn.Conv2d, ConvGeometry]]:
    """Each distinct conv of the model (by geometry) with its input geometry on size x size images."""
    model = build_model(model_name, 10, 3).eval()
    found: dict[ConvGeometry, nn.Conv2d] = {}

    def keep(module, inputs, output):
        found.setdefault(ConvGeometry.of(module, tuple(inputs[0].shape[2:])), module)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return [(conv, geometry) for geometry, conv in found.items()]


def form_rows(model_name: str, batch: int, device: str = "cpu", repeats: int = 3) -> list[dict]:
    """Per distinct conv: ms of every exact form (interleaved, best of `repeats`), the rule's pick, the fastest,
    and the picked form's time over the fastest's. On the CPU in 32-sample slices, as the pass runs them."""
    rows = []
    step = device_model(torch.device(device).type).layer_batch or batch
    for conv, geometry in conv_geometries(model_name):
        conv = conv.to(device)
        a = torch.randn(batch, geometry.c_in, *geometry.in_size, device=device)
        g = torch.randn(batch, geometry.c_out, *geometry.out_size, device=device)
        forms = [f for f in CONV_FORMS if f not in GRAM_FORMS or geometry.groups == 1]

        def timed_form(form, conv=conv, a=a, g=g):
            return lambda: [conv_weight_sq(conv, a[i : i + step], g[i : i + step], form) for i in range(0, batch, step)]

        fns = {form: timed_form(form) for form in forms}
        best = {form: float("inf") for form in forms}
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for form, fn in fns.items():
                best[form] = min(best[form], _timed(fn))
        k, (h, w) = "x".join(map(str, geometry.kernel)), geometry.in_size
        conv_name = f"{geometry.c_in}->{geometry.c_out} {k} s{geometry.stride[0]} on {h}x{w}"
        picked = choose_conv_form(geometry, min(step, batch), torch.device(device).type)
        rows.append({"conv": conv_name, "ms": {f: s * 1e3 for f, s in best.items()}, "picked": picked})
    return rows


def form_line(row: dict) -> str:
    """One form_rows row as a markdown row under FORM_HEADER."""
    ms, picked = row["ms"], row["picked"]
    fastest = min(ms, key=ms.get)
    cells = " | ".join(f"{ms[f]:.1f}" if f in ms else "-" for f in CONV_FORMS)
    return f"| {row['conv']} | {cells} | {picked} | {fastest} | {ms[picked] / ms[fastest]:.2f} |"


def profile_rows(model_name: str, batch: int, device: str = "cpu", top: int = 12) -> list[tuple[str, float, int]]:
    """One scoring pass under torch.profiler: the `top` operators by their own time on the device (CUDA kernels'
    time on a GPU, CPU time on a CPU), as (operator, ms, calls)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = build_model(model_name, 10, 3).eval().to(device)
    x = _normalise(_images(batch)).to(device)
    per_sample_grad_norms(model, x)  # warm-up
    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        per_sample_grad_norms(model, x)
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [(e.key, getattr(e, key) / 1e3, e.count) for e in events]


FORM_HEADER = (
    "| conv | " + " | ".join(CONV_FORMS) + " | rule picks | fastest | picked / fastest |",
    "|---|" + "---:|" * len(CONV_FORMS) + "---|---|---:|",
)


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
    emit(f"## Where a ResNet-18 scoring pass spends its time ({device}, batch {args.batch}, torch.profiler)")
    emit("")
    emit("| operator | self ms | calls |")
    emit("|---|---:|---:|")
    for name, ms, calls in profile_rows("resnet18", args.batch):
        emit(f"| {name} | {ms:.1f} | {calls} |")
    emit("")
    for batch in (64, 256):
        emit(f"## Each exact form of each ResNet-18 conv ({device}, batch {batch}, ms, best of 3)")
        emit("")
        for line in (*FORM_HEADER, *map(form_line, form_rows("resnet18", batch))):
            emit(line)
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
