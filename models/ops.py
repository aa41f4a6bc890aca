"""The ops whose CUDA kernels torch's deterministic mode refuses, each with a form it accepts.

`torch.use_deterministic_algorithms(True)` (the `train: {deterministic: true}` setting) raises on CUDA for the
backward of adaptive average pooling and of the NLL loss (both accumulate with atomicAdd), and for a weighted
bincount. Under that mode on CUDA these helpers switch to forms built from deterministic kernels: a mean over
positions, and log-softmax + gather. Everywhere else (every CPU trial, GPU trials without the mode) they run
the usual op, so no record computed before them changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _deterministic_cuda(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.are_deterministic_algorithms_enabled()


def _under_vmap(x: torch.Tensor) -> bool:
    """Whether x is a member's slice inside torch.func.vmap (fused trials, models/fused_training.py)."""
    return torch._C._functorch.is_batchedtensor(x)


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C]. Under vmap a mean, too: adaptive_avg_pool2d has no batching rule (torch 2.13 falls
    back to a loop over the members, 1.4-2.3x the fused step's time on the small CNN)."""
    if _deterministic_cuda(x) or _under_vmap(x):
        return x.mean((2, 3))
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, C], [B] -> [B]: each sample's cross-entropy."""
    if _deterministic_cuda(logits):
        return -torch.log_softmax(logits, 1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return F.cross_entropy(logits, labels, reduction="none")
