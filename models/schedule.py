"""The LR schedule of a round: a step schedule, read per epoch by eager and captured training alike."""

from __future__ import annotations

from experiments.specs import TrainSpec


def lr_at(epoch: int, train: TrainSpec, decays: bool = True) -> float:
    """The step schedule: the LR is multiplied by lr_gamma after each milestone epoch."""
    passed = sum(epoch >= m for m in train.lr_milestones) if decays else 0
    return train.lr * train.lr_gamma**passed
