"""What one round produces, and the state a trial can be saved and resumed from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

TIMING_FIELDS = ("train_seconds", "eval_seconds", "query_seconds")


@dataclass(frozen=True)
class RoundRecord:
    """One round: every field but the timings is a pure function of (spec, seed) on a given device."""

    round: int
    n_labeled: int  # labeled images the model of this round was trained on
    test_accuracy: float  # fraction in [0, 1]
    per_class_accuracy: tuple[float, ...]
    train_loss: float  # mean training loss of the round's last epoch
    selected: tuple[int, ...]  # pool indices labeled at the end of this round (empty in the last round)
    train_seconds: float
    eval_seconds: float
    query_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(
            **{
                **data,
                "per_class_accuracy": tuple(data["per_class_accuracy"]),
                "selected": tuple(data["selected"]),
            }
        )

    def without_timings(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in TIMING_FIELDS}


@dataclass
class TrialState:
    """Everything needed to continue a trial after its last completed round.

    The optimiser is re-created every round (as in the references) and the random streams are derived
    from (seed, round, purpose), so neither optimiser nor RNG state needs saving at a round boundary.
    """

    trial_id: str
    labeled_round: torch.Tensor  # int64 [N_pool]: round in which each image was first trained on, -1 = unlabeled
    backbone: dict[str, torch.Tensor]  # state_dict after the last completed round
    loss_module: dict[str, torch.Tensor] | None
    records: list[RoundRecord] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the orchestrator's tracking run id

    @property
    def rounds_done(self) -> int:
        return len(self.records)
