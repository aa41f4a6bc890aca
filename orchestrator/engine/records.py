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


@dataclass(frozen=True)
class Fit:
    """What a round's record takes from its trained model: the training loss, the test and the fit on the labeled
    set, and what they took. The round's query takes the rest."""

    train_loss: float  # mean training loss of the last epoch
    test_accuracy: float
    per_class_accuracy: tuple[float, ...]
    train_accuracy: float  # on the labeled set, eval mode, test-time views
    train_seconds: float
    eval_seconds: float


@dataclass(frozen=True)
class Round0Fit:
    """Round 0 trained and tested once for a group of trials that compute the same round 0
    (`orchestrator.engine.round0`): every member starts from these weights and takes this fit into its round-0
    record."""

    key: str  # the group's round-0 key
    weights: Weights  # every network's state after round 0's training
    fit: Fit
    device: str = ""  # where it was trained
