"""What a round checks per epoch, in eager and captured training alike: the step LR schedule and divergence."""

from __future__ import annotations

import math

from experiments.errors import DivergedError
from experiments.specs import TrainSpec


def lr_at(epoch: int, train: TrainSpec, decays: bool = True) -> float:
    """The step schedule: the LR is multiplied by lr_gamma after each milestone epoch."""
    passed = sum(epoch >= m for m in train.lr_milestones) if decays else 0
    return train.lr * train.lr_gamma**passed


def check_epoch_loss(epoch: int, epoch_loss: float, train: TrainSpec, n_labeled: int) -> None:
    """A non-finite mean loss stops the trial with the epoch, the LR and the fix (it is never retried)."""
    if not math.isfinite(epoch_loss):
        raise DivergedError(
            f"training diverged: the mean loss of epoch {epoch} is {epoch_loss} (lr {lr_at(epoch, train)}, "
            f"{n_labeled} labeled images). Lower train.lr in the grid, or check the data normalisation."
        )
