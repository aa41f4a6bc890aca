"""A small CNN with the backbone interface (logits, embedding, four taps) for small images such as digits.

Four conv-BN-ReLU stages (stride 1, then 2, 2, 2) and a linear head: cheap enough for a whole grid on
two CPU cores, with the same four taps as the ResNet so every strategy, the loss-prediction module
included, runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from models.ops import global_average_pool
from models.outputs import ModelOutput


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        stages, previous = [], in_channels
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(nn.Conv2d(previous, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            )
            previous = width
        self.stages = nn.ModuleList(stages)
        self.linear = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        embedding = global_average_pool(x)  # [B, widths[-1]]
        return ModelOutput(self.linear(embedding), embedding, taps)
