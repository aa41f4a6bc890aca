"""The Learning-Loss module (Yoo & Kweon 2019) and its margin-ranking objective, shared by LearningLoss and LPLgrad."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LossPredictionModule(nn.Module):
    """Per tap: global average pool, FC to `hidden`, ReLU; concatenate; FC to 1 (the predicted loss).

    Built from the taps' channel counts, so it fits any backbone with the `ModelOutput` interface.
    """

    def __init__(self, tap_channels: list[int], hidden: int = 128) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, hidden) for c in tap_channels)
        self.head = nn.Linear(hidden * len(tap_channels), 1)

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        pooled = [
            F.relu(fc(torch.flatten(F.adaptive_avg_pool2d(t, 1), 1))) for fc, t in zip(self.fcs, taps, strict=True)
        ]
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)  # [B]


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
    first, mirror = torch.arange(n_pairs), len(predicted) - 1 - torch.arange(n_pairs)
    sign = torch.where(target[first] - target[mirror] > 0, 1.0, -1.0).to(predicted.dtype)
    return F.relu(margin - sign * (predicted[first] - predicted[mirror])).mean()
