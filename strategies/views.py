"""The image views a scoring map sees: test-time by default, train-transform views where a dataset asks for them.

Augmented views draw their crop offsets and flips from a hash of (round key, pool index), never from the
position in a shard, so the same image gets the same view however the subset is sharded.
"""

from __future__ import annotations

import numpy as np
import torch

from models.augment import crop_and_flip


def splitmix64(key: int, values: np.ndarray) -> np.ndarray:
    """A counter-based 64-bit hash: independent uniform uint64 per (key, value), order-free."""
    z = values.astype(np.uint64) + np.uint64((key * 0x9E3779B97F4A7C15) % 2**64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_hash(key: int, pool_indices: np.ndarray) -> np.ndarray:
    """float64 in [0, 1) per pool index: a seeded random value that does not depend on sharding."""
    return (splitmix64(key, pool_indices) >> np.uint64(11)).astype(np.float64) / float(2**53)


def scoring_view(inputs, start: int, stop: int) -> torch.Tensor:
    """Normalised float images [stop - start, C, H, W] of a ScoringInputs slice, augmented if it asks for it."""
    images = inputs.images[start:stop]
    if inputs.augment_padding is not None:
        h = splitmix64(inputs.selection_key ^ 0xA5A5, inputs.pool_indices[start:stop])
        span = np.uint64(2 * inputs.augment_padding + 1)
        offsets = torch.from_numpy(np.stack([h % span, (h >> np.uint64(16)) % span], 1).astype(np.int64))
        flips = torch.from_numpy(((h >> np.uint64(40)) & np.uint64(1)).astype(bool))
        images = crop_and_flip(images, offsets, flips, inputs.augment_padding)
    return inputs.normalize(images)
