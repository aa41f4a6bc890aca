"""The header every committed bench table carries: when, on what machine, with which versions."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np
import torch

from orchestrator.engine.provenance import cpu_model

RESULTS = Path(__file__).parent / "results"
# The real CIFAR-10 subset beside the checkout (as the tests find it); benches must not import the tests
# package, whose conftest needs pytest, absent on the lent GPU machines.
# ALBENCH_DATA_ROOT, where set, names it (the GPU machine's .gpu/setup.sh points it at the carried copy).
CIFAR10_SUBSET = Path(
    os.environ.get("ALBENCH_DATA_ROOT")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-subset"
)


def machine_header(threads: int) -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"date {datetime.date.today().isoformat()}; cpu {cpu} ({os.cpu_count()} cores, torch threads {threads}); "
        f"gpu {gpu}; python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )


def write_result(name: str, text: str) -> Path:
    """bench/results/<name>.md, overwritten: the table of the latest run, committed with the code it measured."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRss:
    """The peak resident memory of a block above the memory resident when it starts (Linux: VmHWM reset).

    ru_maxrss cannot do this: it is the peak of the whole process, so an earlier peak (loading data) hides
    the block's own.
    """

    def __enter__(self) -> PeakRss:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mib = _status_kib("VmHWM") / 1024
        self.rise_mib = self.peak_mib - self.start_kib / 1024
