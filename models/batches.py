"""One epoch's batches with static shapes: the data order and augmentation draws, staged on the device at once.

A captured training step (CUDA graphs) replays kernels on fixed buffers, so it cannot take a new host tensor
per batch, and a partial last batch has its own shape. An epoch is therefore drawn up front: the full batches
as one [steps, batch] index tensor with their crop offsets and flips, and the partial tail, if any, apart
(replayed by its own graph, so the schedule trains on exactly the images eager training does).

The draws come from the same CPU generators, in the same order as eager training makes them (the
permutation, then per batch the crop offsets, then the flips), so both train on identical data and a CPU or
eager run's streams are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from experiments.specs import TrainSpec
from models.augment import draw_crop_and_flip


@dataclass(frozen=True)
class Batches:
    """Batches of one shape: pool indices [steps, size], crop offsets [steps, size, 2], flips [steps, size]."""

    indices: torch.Tensor
    offsets: torch.Tensor
    flips: torch.Tensor

    @property
    def steps(self) -> int:
        return self.indices.shape[0]

    @property
    def size(self) -> int:
        return self.indices.shape[1]


@dataclass(frozen=True)
class EpochBatches:
    """An epoch in training order: the full batches, then the partial tail (None when the size divides)."""

    full: Batches | None
    tail: Batches | None

    def in_order(self) -> list[tuple[Batches, int]]:
        """(batches, step) pairs in the order eager training visits them."""
        parts = [self.full, self.tail]
        return [(part, step) for part in parts if part is not None for step in range(part.steps)]


def batch_sizes(n_labeled: int, batch_size: int) -> list[int]:
    """The distinct batch shapes of an epoch: the full batch, and the tail's if the size does not divide."""
    full, tail = divmod(n_labeled, batch_size)
    return ([batch_size] if full else []) + ([tail] if tail else [])


def _draw_augmentation(n: int, train: TrainSpec, augment: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager training's draws for a batch of n; none without augmentation (eager training then draws nothing)."""
    if not train.augment:
        return torch.zeros(n, 2, dtype=torch.long), torch.zeros(n, dtype=torch.bool)
    return draw_crop_and_flip(n, train.crop_padding, train.hflip, augment)


def stage_epoch(
    labeled: torch.Tensor,  # sorted pool indices of the labeled set, int64, CPU
    train: TrainSpec,
    order: torch.Generator,
    augment: torch.Generator,
    device: torch.device,
) -> EpochBatches:
    """Draws one epoch as eager training does and copies it to `device` in one transfer per tensor."""
    permutation = labeled[torch.randperm(len(labeled), generator=order)]
    draws = [(chunk, *_draw_augmentation(len(chunk), train, augment)) for chunk in permutation.split(train.batch_size)]
    n_full = len(labeled) // train.batch_size
    parts = []
    for chunk in (draws[:n_full], draws[n_full:]):
        if not chunk:
            parts.append(None)
            continue
        columns = zip(*chunk, strict=True)
        indices, offsets, flips = (torch.stack(column).to(device, non_blocking=True) for column in columns)
        parts.append(Batches(indices, offsets, flips))
    return EpochBatches(full=parts[0], tail=parts[1])
