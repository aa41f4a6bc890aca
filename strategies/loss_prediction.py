"""The Learning-Loss family (Yoo & Kweon 2019): a loss-prediction module trained beside the backbone.

LearningLoss and LPLgrad train it; this file is the only place that knows it exists. It holds the module,
LL4AL's margin-ranking loss, the joint objective and the family's settings; the two strategies declare the
module as their auxiliary network 'loss_module' and return the objective.
"""

from __future__ import annotations

from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from experiments.specs import TrainSpec
from models import tap_channels
from models.networks import Networks
from models.objective import Objective
from models.ops import global_average_pool, per_sample_cross_entropy
from models.outputs import ModelOutput
from strategies.settings import StrategySettings

MODULE = "loss_module"
# LL4AL detaches the taps after epoch 120 of its 200 (epochs 0-120 attached, "detach when epoch > 120"); every
# reference schedule of experiments.defaults detaches after 60 % of its epochs (CIFAR 120/200, digits 18/30,
# Caltech-101 and image folders 30/50)
REFERENCE_DETACH_FRACTION = 0.6


class LossPredictionModule(nn.Module):
    """Per tap: global average pool, FC to `hidden`, ReLU; concatenate; FC to 1 (the predicted loss).

    Built from the taps' channel counts, so it fits any backbone with the `ModelOutput` interface.
    """

    def __init__(self, tap_channels: list[int], hidden: int = 128) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, hidden) for c in tap_channels)
        self.head = nn.Linear(hidden * len(tap_channels), 1)

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        pooled = [F.relu(fc(global_average_pool(t))) for fc, t in zip(self.fcs, taps, strict=True)]
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)  # [B]


def build_loss_module(backbone: nn.Module, image_shape: tuple[int, int, int]) -> LossPredictionModule:
    return LossPredictionModule(tap_channels(backbone, image_shape))


def loss_prediction_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """LL4AL's ranking loss: sample i is paired with its mirror B-1-i in the batch (i < B/2).

    With s = sign(l_i - l_j) (ties count as -1), the loss is mean_i max(0, margin - s * (lhat_i - lhat_j)).
    For an odd batch the middle sample has no partner and is left out of this term (the reference
    asserts an even batch; with even batches the two agree exactly). The targets are detached.
    """
    n_pairs = len(predicted) // 2
    if n_pairs == 0:
        return predicted.sum() * 0.0
    target = target.detach()
    # on the predictions' device: a CPU index would copy to the GPU each step, which a CUDA graph cannot capture
    first = torch.arange(n_pairs, device=predicted.device)
    mirror = len(predicted) - 1 - first
    sign = torch.where(target[first] - target[mirror] > 0, 1.0, -1.0).to(predicted.dtype)
    return F.relu(margin - sign * (predicted[first] - predicted[mirror])).mean()


class LossPredictionSettings(StrategySettings):
    """LL4AL's joint training: loss = CE + weight * ranking loss(margin); taps detached after `detach_epoch`."""

    margin: float = Field(default=1.0, ge=0)  # xi
    weight: float = Field(default=1.0, ge=0)  # lambda
    detach_epoch: int | None = Field(default=None, ge=0)  # None: the reference's, scaled (`detach_epoch_for`)
    renamed_from: ClassVar[dict[str, str]] = {
        "lpl_margin": "margin",
        "lpl_weight": "weight",
        "lpl_detach_epoch": "detach_epoch",
    }

    def resolved(self, train: TrainSpec, reference: TrainSpec) -> Self:
        """The detach epoch of this schedule, so the trial's id says exactly when the taps were detached."""
        if self.detach_epoch is not None:
            return self
        return self.model_copy(update={"detach_epoch": detach_epoch_for(train.epochs, reference.epochs)})


def detach_epoch_for(epochs: int, reference_epochs: int) -> int:
    """The reference's detach epoch d for a schedule of `epochs` that shortens (or lengthens) its reference.

    The taps stay attached for epochs 0..d, so d + 1 epochs; that *count* is what scales with the schedule,
    max(0, round((d_ref + 1) * epochs / reference_epochs) - 1). The reference's phases then keep their shares:
    on CIFAR's 200 epochs 60.5 % attached, 19.5 % detached at the high LR, 20 % after the LR step. Scaling d
    itself (albench <= this rule) rounded up into the attached phase: at 8 epochs 75 % stayed attached and none
    ran detached at the high LR; at 3 or fewer the taps were never detached.
    """
    reference_detach = round(REFERENCE_DETACH_FRACTION * reference_epochs)
    return max(0, round((reference_detach + 1) * epochs / reference_epochs) - 1)


class LossPredictionObjective(Objective):
    """CE + weight * ranking loss of the module's predictions; the module's LR decays with the backbone's or not."""

    name = "ce+lpl"

    def __init__(self, settings: LossPredictionSettings, module_lr_decays: bool) -> None:
        self.margin, self.weight, self.detach_epoch = settings.margin, settings.weight, settings.detach_epoch
        self.module_lr_decays = module_lr_decays

    def loss(self, nets: Networks, out: ModelOutput, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.detach_epoch is None:
            raise ValueError("detach_epoch is unresolved: build the strategy from a spec resolved for its schedule")
        per_sample = per_sample_cross_entropy(out.logits, labels)  # [B]
        taps = [t.detach() for t in out.taps] if self.phase(epoch) == "detached" else out.taps
        predicted = nets.auxiliary[MODULE](taps)
        return per_sample.mean() + self.weight * loss_prediction_loss(predicted, per_sample, self.margin)

    def phase(self, epoch: int) -> str:
        """LL4AL's two phases: the taps pass the ranking loss's gradient into the backbone, then are detached."""
        if self.detach_epoch is None:
            raise ValueError("detach_epoch is unresolved: build the strategy from a spec resolved for its schedule")
        return "detached" if epoch > self.detach_epoch else "attached"

    def lr_follows_schedule(self, network: str) -> bool:
        return self.module_lr_decays


class TrainsLossPrediction:
    """Mixin of the family's strategies: declares the module and returns the joint objective."""

    auxiliary_networks = {MODULE: build_loss_module}
    module_lr_decays: ClassVar[bool]  # LL4AL decays the module's LR with the backbone's; LPLgrad's code never does
    settings: LossPredictionSettings

    @property
    def objective(self) -> Objective:
        return LossPredictionObjective(self.settings, self.module_lr_decays)
