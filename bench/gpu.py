"""The GPU proof in one command: `python -m bench.gpu [--data-root DIR]`.

Prints one table and writes bench/results/gpu.md with the machine, versions and date. On a CUDA machine it runs:
- the `gpu`-marked tests (tests/test_gpu.py): per-sample gradient norms on CUDA against a one-sample loop
  (ResNet-18 and the small CNN, the unfold path), bf16 + channels-last training, evaluation, GPU metrics, the
  deterministic mode, a trial over its memory share;
- the gradient-norm bench: ResNet-18 on 32x32 at batch 256: a (the one-sample loop), b (albench), c (a plain
  forward), d (a plain forward + backward);
- the training bench: ResNet-18 in fp32 and bf16, device-resident, against a per-image DataLoader + PIL reference
  (`bench.train`), on the CIFAR-10 subset;
- packing: 1, 2 and 4 CIFAR-10-subset trials at once on one GPU (gpus_per_trial 1, 0.5, 0.25) through Ray, and
  the grid's wall time for each (needs Ray; `--tracking-uri none`, the image has no MLflow);
- the projection: the paper CIFAR-10 grid's GPU-hours from the measured fp32 training throughput
  (`albench plan --train-ips`).
Without CUDA it runs what needs none (the test collection, the plan's counts) and names what it skipped. It
measures and reports; the pass/fail assertions are the tests'.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.environment import CIFAR10_SUBSET, machine_header, write_result

REPO = Path(__file__).resolve().parent.parent
PAPER_GRID = REPO / "experiments" / "grids" / "paper" / "cifar10.yaml"
TARGETS = {"b/a": 50.0, "b/d": 0.5, "train": 20.0, "packing": 2.5}

PACKING_GRID = """\
name: gpu-packing
datasets: [cifar10]
model: small_cnn
regimes: {{subset: {{initial: 200, query: 200, subset: 2000, budget: 600}}}}
strategies: [entropy, margin, random, ent_gradnorm]
seeds: [0]
train: {{epochs: 50, batch_size: 128, precision: bf16}}
resources: {{gpus_per_trial: {share}, cpus_per_trial: 2}}
"""


class Table:
    """Rows of (part, measure, value, target); the skipped parts with their reasons."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.skipped: list[str] = []

    def add(self, part: str, measure: str, value: str, target: str = "") -> None:
        self.rows.append((part, measure, value, target))
        print(f"  {part}: {measure} = {value} {target}".rstrip(), flush=True)

    def skip(self, part: str, why: str) -> None:
        self.skipped.append(f"{part}: {why}")
        print(f"  skipped {part}: {why}", flush=True)

    def markdown(self) -> str:
        lines = ["| part | measure | value | target |", "| --- | --- | --- | --- |"]
        lines += [f"| {p} | {m} | {v} | {t} |" for p, m, v, t in self.rows]
        if self.skipped:
            lines += ["", "Skipped:", *[f"- {s}" for s in self.skipped]]
        return "\n".join(lines)


def gpu_header() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    driver = "unknown"
    with contextlib.suppress(OSError):
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    return f"{torch.cuda.get_device_name(0)}, driver {driver}, CUDA {torch.version.cuda}, torch {torch.__version__}"


def gpu_tests(table: Table) -> None:
    """tests/test_gpu.py in a subprocess: each test's outcome, by name."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED \[\d+\]) (tests/\S+)", done.stdout, re.M)
    counts: dict[str, int] = {}
    for outcome, name in outcomes:
        kind = outcome.split()[0]
        counts[kind] = counts.get(kind, 0) + int(re.search(r"\[(\d+)\]", outcome).group(1) if "[" in outcome else 1)
        if kind in ("FAILED", "ERROR"):
            table.add("gpu tests", name.split("::")[-1], kind)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    table.add("gpu tests", "tests/test_gpu.py", summary)
    if not torch.cuda.is_available():
        table.skip("gpu tests", f"{counts.get('SKIPPED', 0)} tests need a CUDA device")


def gradnorm_bench(table: Table, batch: int, loop: int) -> None:
    from bench.gradnorm import throughput_rows

    r = throughput_rows("resnet18", batch, loop, repeats=5, device="cuda")
    part = f"grad norms (ResNet-18, 32x32, batch {batch}, fp32)"
    table.add(part, "a: one-sample loop, samples/s", f"{r['a']:,.0f}")
    table.add(part, "b: albench, samples/s", f"{r['b']:,.0f}")
    table.add(part, "c: forward, samples/s", f"{r['c']:,.0f}")
    table.add(part, "d: forward + backward, samples/s", f"{r['d']:,.0f}")
    table.add(part, "b/a", f"{r['b'] / r['a']:.1f}x", f">= {TARGETS['b/a']:g}x")
    table.add(part, "b/d", f"{r['b'] / r['d']:.2f}", f">= {TARGETS['b/d']:g}")
    table.add(part, "max relative error vs the loop", f"{r['max_rel_err']:.1e}")


def training_bench(table: Table, data_root: Path, labeled: int, epochs: int) -> float:
    """ResNet-18 images/s per path; returns albench's fp32 rate (the paper grids train in fp32)."""
    from bench.train import run
    from experiments.datasets import load_dataset
    from experiments.defaults import DEFAULTS, resolve_train

    data = load_dataset("cifar10", data_root)
    train = resolve_train(DEFAULTS["cifar10"].train, {"epochs": epochs, "batch_size": 128})
    chosen = np.sort(np.random.default_rng(0).permutation(data.n_train)[:labeled])
    run("resnet18", "albench", data, chosen[:256], train.model_copy(update={"epochs": 1}), "cuda", 0)  # warm-up
    paths = ("reference", "albench", "albench-bf16")
    rates = {path: run("resnet18", path, data, chosen, train, "cuda", 0) for path in paths}
    part = f"training (ResNet-18, {labeled} CIFAR-10 images, {epochs} epochs, batch 128)"
    for path, (ips, accuracy) in rates.items():
        table.add(part, f"{path}: images/s (test acc)", f"{ips:,.0f} ({accuracy:.1%})")
    reference, target = rates["reference"][0], f">= {TARGETS['train']:g}x"
    table.add(part, "albench fp32 / reference", f"{rates['albench'][0] / reference:.1f}x", target)
    table.add(part, "albench bf16 / reference", f"{rates['albench-bf16'][0] / reference:.1f}x", target)
    return rates["albench"][0]


def packing_bench(table: Table, data_root: Path) -> None:
    """The same 4-trial grid at 1, 2 and 4 trials per GPU, each in a fresh results folder."""
    walls = {}
    for share in (1, 0.5, 0.25):
        with tempfile.TemporaryDirectory() as folder:
            grid = Path(folder) / "grid.yaml"
            grid.write_text(PACKING_GRID.format(share=share))
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "run", str(grid), "--data-root", str(data_root),
                 "--results", str(Path(folder) / "results"), "--tracking-uri", "none"],
                cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            walls[share] = time.perf_counter() - start
            if done.returncode != 0:
                table.add("packing", f"gpus_per_trial {share}", f"FAILED: {done.stderr.strip()[-300:]}")
                return
        per_gpu = round(1 / share)
        table.add("packing (4 subset trials, 1 GPU)", f"{per_gpu} per GPU: grid wall s", f"{walls[share]:.0f}")
    table.add(
        "packing (4 subset trials, 1 GPU)",
        "4 per GPU: throughput / 1 per GPU",
        f"{walls[1] / walls[0.25]:.2f}x",
        f">= {TARGETS['packing']:g}x",
    )


def projection(table: Table, train_ips: float | None) -> None:
    command = [sys.executable, "-m", "orchestrator.cli", "plan", str(PAPER_GRID)]
    if train_ips:
        command += ["--train-ips", f"{train_ips:.0f}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    total = next((line for line in done.stdout.splitlines() if line.startswith("total")), done.stderr.strip())
    fields = total.split()
    table.add("paper CIFAR-10 grid", "trials / rounds / training image-passes", " / ".join(fields[1:4]))
    if train_ips:
        table.add("paper CIFAR-10 grid", f"training GPU-hours at the measured {train_ips:,.0f} images/s", fields[-1])
    else:
        table.skip("projection", "GPU-hours need a GPU's measured training throughput")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=CIFAR10_SUBSET, help="holds cifar-10-batches-py")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loop", type=int, default=64, help="images for the one-sample reference loop")
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cuda = torch.cuda.is_available()
    has_data = (args.data_root / "cifar-10-batches-py").is_dir()
    table = Table()
    print(f"GPU: {gpu_header()}", flush=True)
    gpu_tests(table)
    train_ips = None
    if not cuda:
        for part in ("gradient-norm bench", "training bench", "packing"):
            table.skip(part, "needs a CUDA device")
    else:
        gradnorm_bench(table, args.batch, args.loop)
        if has_data:
            train_ips = training_bench(table, args.data_root, args.labeled, args.epochs)
        else:
            table.skip("training bench", f"no CIFAR-10 subset at {args.data_root} (--data-root)")
        if not has_data:
            table.skip("packing", f"no CIFAR-10 subset at {args.data_root} (--data-root)")
        elif importlib.util.find_spec("ray") is None:
            table.skip("packing", "Ray is not installed (GPU.md: carry its wheel)")
        else:
            packing_bench(table, args.data_root)
    projection(table, train_ips)
    header = machine_header(torch.get_num_threads())
    text = f"# GPU proof (`python -m bench.gpu`)\n\n{header}\n\nGPU: {gpu_header()}\n\n"
    text += table.markdown() + "\n"
    print()
    print(table.markdown())
    print(f"\nwrote {write_result('gpu', text)}")


if __name__ == "__main__":
    main()
