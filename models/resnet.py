"""The CIFAR-style ResNet-18 of LL4AL, AL-GradNorm and LPLgrad (the 'kuangliu' network).

3x3 stem without max-pool, BasicBlocks 2-2-2-2 with widths 64-512 and strides 1-2-2-2, global average
pool, one linear head. The references' unused second head (`linear1`) is left out. Global average pooling
(instead of a fixed 4x4 pool) keeps 32x32 inputs identical to the reference and admits other sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.ops import global_average_pool
from models.outputs import ModelOutput


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, previous = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(previous, width, stride), BasicBlock(width, width, 1)))
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = F.relu(self.bn1(self.conv1(x)))
        taps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out)
            taps.append(out)
        embedding = global_average_pool(out)  # [B, 512]
        return ModelOutput(self.linear(embedding), embedding, taps)
