"""Random streams derived from (seed, round, purpose): changing one use of randomness never shifts another.

Because every stream is recomputed from its key, a trial's randomness needs no saved RNG state: a trial
resumed at round r draws exactly what the uninterrupted trial drew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def stream_key(seed: int, round_index: int, purpose: str) -> int:
    """A 63-bit integer key for one purpose (e.g. 'init', 'initial', 'order', 'augment', 'subset', 'select')."""
    digest = hashlib.sha256(f"albench/{seed}/{round_index}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, round_index: int, purpose: str) -> torch.Generator:
    """A CPU torch generator for one stream (CPU, so CPU and GPU runs draw identical numbers)."""
    return torch.Generator().manual_seed(stream_key(seed, round_index, purpose))


@contextmanager
def seeded_global_rng(seed: int, round_index: int, purpose: str) -> Iterator[None]:
    """For code that draws from torch's global RNG (layer initialisers): seed it, and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_key(seed, round_index, purpose))
        yield
