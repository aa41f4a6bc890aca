"""The kind of CPU a float result was computed on: bit-exact expectations hold only on the same kind.

AMD EPYC and Intel Xeon machines give different bits for the same training, and so can two Xeons whose vector
units differ (torch's ATen and oneDNN pick kernels by the instruction set), so the kind is the model name, the
instruction set torch uses, and whether the CPU has AMX tiles."""

from __future__ import annotations

from pathlib import Path

import torch

from orchestrator.engine.provenance import cpu_model


def cpu_kind() -> str:
    """E.g. 'Intel(R) Xeon(R) Processor, AVX512, AMX'."""
    cpuinfo = Path("/proc/cpuinfo")
    amx = cpuinfo.exists() and "amx_tile" in cpuinfo.read_text()
    return ", ".join([cpu_model(), torch.backends.cpu.get_cpu_capability(), *(["AMX"] if amx else [])])


def computed_here(kind: str) -> bool:
    """Whether numbers computed on `kind` hold bit for bit here. A kind given by its model name alone (the records
    albench 17506af computed on an AMD EPYC, before kinds were recorded) matches that model."""
    here = cpu_kind()
    return kind == here or kind == here.split(", ")[0]
