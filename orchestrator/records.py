"""The state a trial can be saved and resumed from: its labeling history, its networks' weights, its records."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from experiments.records import RoundRecord
from models.networks import Weights


@dataclass
class TrialState:
    """Everything needed to continue a trial after its last completed round.

    The optimiser is re-created every round (as in the references) and the random streams are derived
    from (seed, round, purpose), so neither optimiser nor RNG state needs saving at a round boundary.
    """

    trial_id: str
    labeled_round: torch.Tensor  # int64 [N_pool]: round in which each image was first trained on, -1 = unlabeled
    weights: Weights  # every network's state_dict after the last completed round: 'backbone' + the strategy's own
    records: list[RoundRecord] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the orchestrator's tracking run id

    @property
    def rounds_done(self) -> int:
        return len(self.records)
