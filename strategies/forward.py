"""Batched eval-mode forward passes over a shard, shared by the strategies that need no gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from models.outputs import ModelOutput
from strategies.base import ScoringInputs


@contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode (BN on running statistics) for the duration, then each module's own mode again."""
    present = [m for m in modules if m is not None]
    modes = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(present, modes, strict=True):
            m.train(mode)


def map_outputs(
    inputs: ScoringInputs, per_batch: Callable[[ModelOutput], torch.Tensor], dtype=np.float64
) -> np.ndarray:
    """Applies `per_batch` to the backbone's output on every batch of the shard; concatenated as numpy."""
    parts = []
    with eval_mode(inputs.backbone, *inputs.networks.values()), torch.no_grad():
        for _, x in inputs.batches():
            parts.append(
                per_batch(inputs.backbone(x))
                .detach()
                .to("cpu", torch.float64 if dtype == np.float64 else torch.float32)
            )
    if not parts:
        return np.zeros((0,), dtype=dtype)
    return torch.cat(parts).numpy().astype(dtype, copy=False)
