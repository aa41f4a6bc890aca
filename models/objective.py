"""What a round's training minimises. The default is plain cross-entropy on the backbone's logits.

A strategy that trains networks of its own (the loss-prediction module of LearningLoss and LPLgrad) brings
an objective that also trains them; training never names them, it only follows the objective.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from models.networks import Networks
from models.ops import per_sample_cross_entropy
from models.outputs import ModelOutput


class Objective:
    """Cross-entropy. Subclasses add terms for the strategy's own networks and say whose LR follows the schedule."""

    name = "ce"

    def loss(self, nets: Networks, out: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """The mean loss of one batch at `epoch` (0-based)."""
        return per_sample_cross_entropy(out.logits, labels).mean()

    def phase(self, epoch: int) -> Hashable:
        """What `loss` reads of the epoch: equal phases, equal loss graphs (a captured step has one per phase)."""
        return 0

    def lr_follows_schedule(self, network: str) -> bool:
        """Whether an auxiliary network's LR steps down with the backbone's (the backbone's always does)."""
        return True

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


CROSS_ENTROPY = Objective()
