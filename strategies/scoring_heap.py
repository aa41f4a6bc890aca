"""The C heap while pool scoring: `fast` (the default) or `bounded`, a process-wide choice as the heap is.

glibc serves a large buffer from its heap once its dynamic mmap threshold has grown (it grows to the size of
the largest buffer freed, up to 32 MiB). A chunk's backward frees dozens of activation buffers of several
MiB; on the heap they fragment, so the peak of a chunk depends on where earlier chunks left their holes, and
the peak of a pass is the worst of its chunks: with more chunks, more chances of a bad one (bench/gradnorm.py,
small CNN, chunk 256: 334 MiB above the resident memory at 2,500 images, 374 MiB at 40,000).

In `bounded` mode (grid `resources.scoring_heap: bounded`) a scoring pass runs on one dedicated thread of
the process, so glibc gives it an arena of its own that training's freed buffers never enter, and while it
runs buffers of 1 MiB or more are mapped and unmapped one by one. Each freed activation leaves the process
at once and every chunk peaks at its own live tensors, the same at any pool size, after any training (both
parts are needed: with the thresholds alone, large free chunks left by training still get reused). The
price is a page fault for every page of every large buffer: scoring on a CPU takes 1.2-2.1x as long (bench), so
it is not the default. Training would feel the thresholds too (about 30 % slower on the small CNN), so after
each pass they go to the values glibc's dynamic rule settles at in a training process (32 MiB mapping,
64 MiB trim). GPU scoring keeps its buffers in CUDA's caching allocator, so the mode matters on CPUs. With
a C library other than glibc (macOS, musl) both modes are `fast`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal, TypeVar

T = TypeVar("T")

ScoringHeap = Literal["fast", "bounded"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
SCORING_MMAP_THRESHOLD = 1 << 20
TRAINING_MMAP_THRESHOLD, TRAINING_TRIM_THRESHOLD = 32 << 20, 64 << 20


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only: AttributeError elsewhere)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()
_mode: ScoringHeap = "fast"
_scoring_thread: ThreadPoolExecutor | None = None  # bounded mode: one thread, so one arena, for every pass


def set_scoring_heap(mode: ScoringHeap) -> ScoringHeap:
    """Sets this process's mode (the runners call it from the grid's resources); returns the previous one."""
    global _mode
    if mode not in ("fast", "bounded"):
        raise ValueError(f"scoring heap mode must be 'fast' or 'bounded', not {mode!r}")
    previous, _mode = _mode, mode
    return previous


def release_freed_memory() -> None:
    """Hands the heap's free pages back to the OS (after each scoring chunk: the small buffers' share)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def run_scoring(score: Callable[[], T]) -> T:
    """Runs one scoring pass (a shard's map) in this process's scoring heap: see the module docstring."""
    global _scoring_thread
    if _LIBC is None or _mode == "fast":
        return score()
    if _scoring_thread is None:
        _scoring_thread = ThreadPoolExecutor(1, thread_name_prefix="albench-scoring")
    return _scoring_thread.submit(_with_bounded_thresholds, score).result()


def _with_bounded_thresholds(score: Callable[[], T]) -> T:
    with _bounded_thresholds():
        return score()


@contextmanager
def _bounded_thresholds() -> Iterator[None]:
    _LIBC.mallopt(M_MMAP_THRESHOLD, SCORING_MMAP_THRESHOLD)
    _LIBC.mallopt(M_TRIM_THRESHOLD, SCORING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        _LIBC.mallopt(M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD)
        _LIBC.mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD)
        release_freed_memory()
