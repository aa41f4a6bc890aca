"""A small CNN with dropout before its classifier head: the kind of backbone MC-dropout BALD was made for.

It keeps albench's backbone contract (`albench.api.ModelOutput`: logits, the penultimate embedding, four taps),
so every strategy of a grid runs on it, albench's own included.
"""

from __future__ import annotations

import torch
from torch import nn

from albench.api import ModelOutput


class McDropoutCNN(nn.Module):
    """Four conv-BN-ReLU stages (stride 1, 2, 2, 2), global average pooling, dropout, a linear head."""

    def __init__(
        self, n_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.3
    ) -> None:
        super().__init__()
        stages, previous = [], in_channels
        for i, width in enumerate(widths):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
                )
            )
            previous = width
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        embedding = x.mean(dim=(2, 3))
        return ModelOutput(self.head(self.dropout(embedding)), embedding, taps)
