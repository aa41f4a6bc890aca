"""Batched image preprocessing on the device where the data lives: random crop with padding, flip, normalise.

The random choices are tensors (offsets and flips) so the same code serves training (drawn from a seeded
generator) and shard-invariant augmented scoring (drawn per pool index from a hash).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Normalizer:
    """uint8 [B, C, H, W] -> float (x/255 - mean)/std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=dtype, device=images.device).view(shape)
        return (images.to(dtype) / 255.0 - mean) / std


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding`, take the HxW window at offsets [B, 2] (dy, dx in 0..2*padding), flip where flips [B]."""
    n, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = torch.arange(h, device=images.device)[None, :] + offsets[:, :1].to(images.device)  # [B, H]
        cols = torch.arange(w, device=images.device)[None, :] + offsets[:, 1:].to(images.device)  # [B, W]
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flips = flips.to(images.device).view(n, 1, 1, 1)
    return torch.where(flips, images.flip(3), images)


def draw_crop_and_flip(
    n: int, padding: int, hflip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's augmentation draws from `generator`, in their fixed order: crop offsets [n, 2], then flips [n].

    Eager training draws per batch, a captured step stages an epoch's draws at once (`models.batches`); both
    call this, so they consume the stream identically.
    """
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return offsets, flips


def random_crop_and_flip(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """The standard CIFAR augmentation, drawn from `generator` (on the CPU, so CPU and GPU runs draw alike)."""
    offsets, flips = draw_crop_and_flip(len(images), padding, hflip, generator)
    return crop_and_flip(images, offsets, flips, padding)
