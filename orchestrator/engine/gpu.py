"""The GPU side of a trial's process, with torch alone: its memory share, the deterministic mode, and what each
round used of its own GPU (peak memory, utilisation).

Everything here runs in the trial's own process, never on the driver: the driver's NVML sees every GPU of its
node, the trial's CUDA runtime sees only the one Ray gave it (CUDA_VISIBLE_DEVICES), and torch maps that one to
its NVML device. On a CPU every function is a no-op and every measurement is None.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.errors import AlbenchError

# cuBLAS reuses workspaces in a fixed order only with a fixed workspace configuration (CUDA's documentation:
# "Results reproducibility"); ':4096:8' is the larger of the two documented settings.
CUBLAS_WORKSPACE = ":4096:8"
UTILISATION_PERIOD_S = 0.5  # NVML's own sample period is 1/6 to 1 s: a faster poll only repeats its samples
MIB = 2**20


class GpuMemoryError(AlbenchError):
    """A trial ran out of GPU memory: within its share of a packed GPU, or of a whole one."""


def indexed(device: str | torch.device) -> torch.device:
    """The device with its index: 'cuda' is this process's current CUDA device. torch.cuda's calls that take a
    device without `optional=True` (set_per_process_memory_fraction) refuse a CUDA device without an index."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def limit_memory(share: float, device: str | torch.device) -> None:
    """Caps this process to `share` of its GPU's memory, so that trials packed on one GPU cannot starve each
    other: the one that overruns its share gets an out-of-memory error; its neighbours are not touched."""
    device = torch.device(device)
    if device.type == "cuda" and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share, indexed(device))


def out_of_memory(error: BaseException, share: float, score_batch_size: int | str, batch_size: int) -> GpuMemoryError:
    """The message of a trial that ran out of GPU memory, naming the settings that fix it."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = f"its share of the GPU (resources.gpus_per_trial = {share:g})" if share < 1 else "its GPU"
    return GpuMemoryError(
        f"the trial ran out of memory on {where}: {first_line}. Fix: fewer trials per GPU (raise "
        f"resources.gpus_per_trial, e.g. to {min(1.0, share * 2):g}), or a smaller resources.score_batch_size "
        f"(now {score_batch_size}) or train.batch_size (now {batch_size})"
    )


def set_deterministic(on: bool) -> None:
    """`train: {deterministic: true}`: the algorithms torch documents as reproducible, and nothing else.

    Sets (or clears, for a process that ran a deterministic trial before) torch's deterministic algorithms,
    cuDNN's deterministic kernels without its benchmark autotuner, and cuBLAS's fixed workspace. Must run before
    the process's first cuBLAS call for the workspace to take effect; a trial's worker calls it first thing.
    """
    if on:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: never reproducible


@dataclass(frozen=True)
class GpuUse:
    """What one round used of its GPU (None on a CPU, utilisation None where NVML is absent)."""

    peak_allocated_mib: float | None = None  # the most memory tensors held at once (torch's allocator)
    peak_reserved_mib: float | None = None  # the most the allocator held from the driver (what nvidia-smi shows)
    utilization: float | None = None  # mean % of time a kernel ran on this GPU during the round (NVML)


class GpuMeter:
    """Measures a round on its device: `with GpuMeter(device) as meter: ...`, then `meter.result`."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.result = GpuUse()
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMeter:
        if self.device.type != "cuda":
            return self
        torch.cuda.reset_peak_memory_stats(self.device)
        if nvml_readable(self.device):
            self._thread = threading.Thread(target=self._sample, daemon=True, name="albench-gpu-meter")
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(UTILISATION_PERIOD_S):
            self._samples.append(float(torch.cuda.utilization(self.device)))

    def __exit__(self, *exc) -> None:
        if self.device.type != "cuda":
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if not self._samples:  # a round shorter than one period: one reading at its end
                self._samples.append(float(torch.cuda.utilization(self.device)))
        self.result = GpuUse(
            torch.cuda.max_memory_allocated(self.device) / MIB,
            torch.cuda.max_memory_reserved(self.device) / MIB,
            sum(self._samples) / len(self._samples) if self._samples else None,
        )


def nvml_readable(device: torch.device) -> bool:
    """Whether NVML (nvidia-ml-py) is installed and answers for this process's device."""
    try:
        torch.cuda.utilization(device)  # maps CUDA_VISIBLE_DEVICES (indices or UUIDs) to the NVML device
    except Exception:  # no pynvml, no driver library, or a device NVML cannot see (MIG, some containers)
        return False
    return True


def mps_pipe_directory() -> Path:
    """Where CUDA clients look for the MPS control daemon (NVIDIA's MPS guide: CUDA_MPS_PIPE_DIRECTORY, by default
    /tmp/nvidia-mps)."""
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))


def mps_daemon_listening() -> bool:
    """Whether an MPS control daemon has its pipe where this process's CUDA clients look: then every CUDA context
    this process creates is an MPS client, and the kernels of trials packed on one GPU can run at the same time."""
    control = mps_pipe_directory() / "control"
    return control.exists() and not control.is_file()


def mps_active(device: str | torch.device) -> bool | None:
    """MPS on this trial's GPU, for its records and run header; None on a CPU (MPS does not apply)."""
    return mps_daemon_listening() if torch.device(device).type == "cuda" else None
