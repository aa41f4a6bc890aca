"""Where a result came from: the code's git sha and the hardware it ran on."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch


@functools.cache
def git_sha() -> str:
    """HEAD of the albench checkout (with '-dirty' for uncommitted changes), or 'unknown' outside git."""
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def device_name(device: str | torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'cpu: <processor> x<threads>': the cost tables say what rows were measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} x{torch.get_num_threads()}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
