"""The grid parts of the GPU proof (`python -m bench.gpu`): every strategy end to end with the round-0 check, and
packing through Ray. Each runs `albench run` on a grid written here, in a subprocess, as a user would, and reads the
Parquet rows back."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from bench.gpu import Table

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"packing": 2.5, "startup": 0.10}
WORK = ["train_seconds", "eval_seconds", "query_seconds"]

STRATEGIES_GRID = """\
name: gpu-strategies
datasets: [cifar10]
model: {model}
regimes: {{r: {{initial: 200, query: 200, subset: 1000, budget: 600}}}}
strategies: [{strategies}]
seeds: [0]
train: {{epochs: {epochs}, batch_size: 128}}
resources: {{gpus_per_trial: 1, cpus_per_trial: 4}}
"""

PACKING_GRID = """\
name: gpu-packing
datasets: [cifar10]
model: {model}
regimes: {{r: {{initial: 1000, query: 1000, subset: 2000, budget: 3000}}}}
strategies: [entropy, lplgrad]
seeds: [0, 1]
train: {{epochs: {epochs}, batch_size: 128}}
resources: {{gpus_per_trial: {share}, cpus_per_trial: 2}}
"""


def run_grid(text: str, folder: Path, data_root: Path, *options: str) -> tuple[float, subprocess.CompletedProcess]:
    """`albench run` of a grid in a subprocess (wall seconds, the finished process); rows in folder/results.

    Its stdout comes back as 'SECONDS<TAB>line' lines: when each line arrived, from the command's start."""
    grid = folder / "grid.yaml"
    grid.write_text(text)
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(grid), "--data-root", str(data_root),
               "--results", str(folder / "results"), "--tracking-uri", "none", *options]  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
        lines = [f"{time.perf_counter() - start:.2f}\t{line}" for line in process.stdout]
        process.wait()
        errors.seek(0)
        done = subprocess.CompletedProcess(command, process.returncode, "".join(lines), errors.read())
    return time.perf_counter() - start, done


def start_up_seconds(done: subprocess.CompletedProcess, rows: pd.DataFrame) -> float | None:
    """From the command's start to the first round-0 fit's training: when the driver heard of that fit, less the
    fit's own training and test seconds (its round-0 rows)."""
    for line in done.stdout.splitlines():
        arrived, _, text = line.partition("\t")
        if "trained once" in text:
            key = text.split("round 0 of group ")[1].split()[0]
            fit = rows[(rows["round"] == 0) & (rows["round0_group"] == key)].iloc[0]
            return float(arrived) - fit["train_seconds"] - fit["eval_seconds"]
    return None


def _failure(done: subprocess.CompletedProcess) -> str:
    return "FAILED: " + " ".join((done.stderr.strip() or done.stdout.strip())[-400:].split())


def strategies_bench(table: Table, data_root: Path, epochs: int, device: str = "cuda", model: str = "resnet18") -> None:
    """Every registered strategy, 3 rounds, in-process on the device; then each round-0 group's rows."""
    from strategies import STRATEGY_NAMES

    part = f"strategies ({model}, {device}, 200 -> 600 labels, {epochs} epochs a round)"
    with tempfile.TemporaryDirectory() as folder:
        text = STRATEGIES_GRID.format(strategies=", ".join(STRATEGY_NAMES), epochs=epochs, model=model)
        wall, done = run_grid(text, Path(folder), data_root, "--in-process", "--device", device)
        rows = pd.read_parquet(Path(folder) / "results" / "rounds") if done.returncode == 0 else None
    if rows is None:
        table.add(part, "grid", _failure(done))
        return
    for name, trial in rows.sort_values("round").groupby("strategy"):
        seconds = trial[WORK].to_numpy().sum()
        accuracy = ", ".join(f"{a:.1%}" for a in trial["test_accuracy"])
        table.add(part, f"{name}: rounds, test accuracy by round, s", f"{len(trial)}, {accuracy}, {seconds:.0f}")
    table.add(part, "grid wall s (12 trials)", f"{wall:.0f}")
    first = rows[rows["round"] == 0]
    for key, group in first.groupby("round0_group"):
        fields = group[["test_accuracy", "train_loss", "train_accuracy"]].drop_duplicates()
        members = ", ".join(sorted(group["strategy"]))
        value = f"{len(fields)} distinct of {len(group)} rows (test accuracy {group['test_accuracy'].iloc[0]:.2%})"
        table.add(f"round 0 on {device}: group {key}", f"round-0 rows of {members}", value, "1 distinct")


def packing_bench(table: Table, data_root: Path, epochs: int, model: str = "resnet18") -> None:
    """The same 4-trial grid at 1 and at 4 trials per GPU through Ray, each in a fresh results folder."""
    part = f"packing ({model}, 4 trials of 1000 -> 3000 labels, {epochs} epochs, 1 GPU)"
    walls, work, start_up = {}, 0.0, None
    for share in (1, 0.25):
        with tempfile.TemporaryDirectory() as folder:
            text = PACKING_GRID.format(share=share, epochs=epochs, model=model)
            walls[share], done = run_grid(text, Path(folder), data_root)
            if done.returncode != 0:
                table.add(part, f"gpus_per_trial {share}", _failure(done))
                return
            if share == 1:
                rows = pd.read_parquet(Path(folder) / "results" / "rounds")
                work = float(rows[WORK].to_numpy().sum())
                start_up = start_up_seconds(done, rows)
        table.add(part, f"{round(1 / share)} per GPU: grid wall s", f"{walls[share]:.0f}")
    if start_up is not None:
        share_of_wall = f"{start_up:.0f} s, {start_up / walls[1]:.1%} of the wall"
        table.add(
            part, "1 per GPU: start-up (to the first fit's training)", share_of_wall, f"< {TARGETS['startup']:.0%}"
        )
    table.add(part, "1 per GPU: wall not in the trials' own work (start-up included)", f"{1 - work / walls[1]:.1%}")
    table.add(
        part, "4 per GPU: throughput / 1 per GPU", f"{walls[1] / walls[0.25]:.2f}x", f">= {TARGETS['packing']:g}x"
    )


FUSION_GRID = """\
name: gpu-fusion
datasets: [cifar10]
model: {model}
regimes: {{r: {{initial: 1000, query: 1000, subset: 2000, budget: 3000}}}}
strategies: [entropy, margin, least_confidence, random]
seeds: {seeds}
train: {{epochs: {epochs}, batch_size: 128}}
resources: {{gpus_per_trial: {share}, cpus_per_trial: 2, fuse: {fuse}}}
"""


@contextlib.contextmanager
def mps_daemon(folder: Path):
    """An NVIDIA MPS control daemon of our own (pipe and log in `folder`) for the grids run inside, or None where
    this machine cannot start one. Its Ray workers inherit CUDA_MPS_PIPE_DIRECTORY, so their CUDA contexts are
    MPS clients; the daemon is stopped by its own `quit` command, never by a kill of processes we did not start."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        yield None
        return
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    (folder / "pipe").mkdir(parents=True, exist_ok=True)
    (folder / "log").mkdir(parents=True, exist_ok=True)
    started = subprocess.run([control, "-d"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        yield None
        return
    saved = {k: os.environ.get(k) for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield env
    finally:
        subprocess.run([control], input="quit\n", env=env, capture_output=True, text=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fusion_bench(table: Table, data_root: Path, epochs: int, model: str = "resnet18") -> dict[str, float]:
    """Throughput (trials per hour of one GPU) of the same cross-entropy trials run 1 per GPU, 4 per GPU packed
    (with and, where it can start, without MPS), and fused in groups of 4 and of 8; each as a grid through Ray in
    a fresh results folder. Returns each setting's throughput over 1 per GPU."""
    part = f"fusion ({model}, trials of 1000 -> 3000 labels, {epochs} epochs, 1 GPU)"
    settings = [  # name, seeds, share, fuse, under MPS
        ("1 per GPU", [0], 1, 1, False),
        ("4 per GPU packed", [0], 0.25, 1, False),
        ("4 per GPU packed, MPS", [0], 0.25, 1, True),
        ("fused 4", [0], 1, 4, False),
        ("fused 8", [0, 1], 1, 8, False),
    ]
    rates: dict[str, float] = {}
    for name, seeds, share, fuse, mps in settings:
        with tempfile.TemporaryDirectory() as folder, mps_daemon(Path(folder) / "mps") if mps else nullcontext() as env:
            if mps and env is None:
                table.skip(f"{part}: {name}", "this machine cannot start an MPS control daemon")
                continue
            text = FUSION_GRID.format(model=model, seeds=seeds, epochs=epochs, share=share, fuse=fuse)
            wall, done = run_grid(text, Path(folder), data_root)
            if done.returncode != 0:
                table.add(part, name, _failure(done))
                continue
            rows = pd.read_parquet(Path(folder) / "results" / "rounds")
            trials = rows["trial_id"].nunique()
            rates[name] = trials / wall
            recorded = "on" if rows["mps"].fillna(False).all() else "off"
            table.add(part, f"{name}: {trials} trials, grid wall s (MPS recorded: {recorded})", f"{wall:.0f}")
    base = rates.get("1 per GPU")
    ratios = {name: rate / base for name, rate in rates.items()} if base else {}
    for name, ratio in ratios.items():
        if name != "1 per GPU":
            table.add(part, f"{name}: throughput / 1 per GPU", f"{ratio:.2f}x", f">= {TARGETS['packing']:g}x")
    return ratios
