"""`resources.score_batch_size: auto`: on a GPU, scoring chunks as large as the trial's memory allows.

A chunk's size is a mechanic (scores are per sample, in eval mode), so it may change from chunk to chunk. The first
chunk has the default size; its peak memory per image, over what was allocated before it, sizes the next ones to
fill a fixed share of what this process may still allocate: the device's free memory and the allocator's cached
blocks, within the per-process memory fraction that packing sets (orchestrator/engine/gpu.py `limit_memory`). On a CPU
`auto` is the default size (host memory, not throughput, is what a chunk bounds there).
"""

from __future__ import annotations

import torch

FILL = 0.8  # of the headroom: the allocator's fragmentation and the chunk-to-chunk variation stay below 20 %
MULTIPLE = 64  # sizes in whole 64-image steps: few distinct shapes, so few kernel autotunings
MAX_CHUNK = 8192  # beyond this a chunk's launch overhead is already negligible; the pool is split anyway


def chunk_that_fits(bytes_per_image: float, headroom_bytes: float, first: int) -> int:
    """The largest multiple of MULTIPLE images whose measured footprint fills at most FILL of the headroom, and
    never below `first` (the size that has just run) nor above MAX_CHUNK."""
    if bytes_per_image <= 0:
        return MAX_CHUNK
    fits = int(FILL * headroom_bytes / bytes_per_image) // MULTIPLE * MULTIPLE
    return max(first, min(MAX_CHUNK, fits))


def cuda_headroom(device: torch.device) -> int:
    """Bytes this process can still allocate on `device`: free device memory plus its cached unused blocks, within
    its per-process fraction of the total."""
    free, total = torch.cuda.mem_get_info(device)
    allocated, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.8
    fraction = get_fraction(device) if get_fraction is not None else 1.0
    return max(0, min(free + reserved - allocated, int(fraction * total) - allocated))


class ChunkSizer:
    """Sizes successive scoring chunks: `fixed` images each, or growing to the memory after the first (`grow`)."""

    def __init__(self, size: int, grow: bool, device: torch.device) -> None:
        self.size, self.device = size, device
        self.grow = grow and device.type == "cuda"
        self._base = 0

    def begin(self) -> None:
        """Before a chunk: what is allocated, and a fresh peak."""
        if self.grow:
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def end(self, images: int) -> None:
        """After a chunk of `images`: the next chunk's size from this one's peak per image."""
        if self.grow and images > 0:
            torch.cuda.synchronize(self.device)
            per_image = (torch.cuda.max_memory_allocated(self.device) - self._base) / images
            self.size = chunk_that_fits(per_image, cuda_headroom(self.device), self.size)
