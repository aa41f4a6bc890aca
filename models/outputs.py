"""The interface every backbone shares, so strategies and the networks they train fit any of them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """Forward result. `logits` is the first field: tools that take 'the first field' find the logits."""

    logits: torch.Tensor  # [B, n_classes]
    embedding: torch.Tensor  # [B, d]: penultimate features (coreset, BADGE)
    taps: list[torch.Tensor]  # the four stage outputs [B, C_i, H_i, W_i]: what tap-reading networks see
