"""One round of training: SGD with momentum and weight decay, a step LR schedule, batched device-side augmentation.

The optimiser is created afresh each round (the references reset momentum every cycle) and the LR follows
lr * gamma^(milestones passed) per epoch, so a round's training is a pure function of the weights it
starts from, the labeled set and its two random streams (data order, augmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.errors import DivergedError
from experiments.specs import TrainSpec
from models.augment import Normalizer, random_crop_and_flip
from models.loss_prediction import loss_prediction_loss
from models.objective import Objective


@dataclass
class Networks:
    """The trainable parts of a trial: the backbone and, for `ce+lpl`, the loss-prediction module."""

    backbone: nn.Module
    loss_module: nn.Module | None = None

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.backbone, self.loss_module) if m is not None]


@dataclass(frozen=True)
class TrainStats:
    epochs: int
    final_loss: float  # mean training loss of the last epoch


def lr_at(epoch: int, train: TrainSpec, decays: bool = True) -> float:
    """The step schedule: the LR is multiplied by lr_gamma after each milestone epoch."""
    passed = sum(epoch >= m for m in train.lr_milestones) if decays else 0
    return train.lr * train.lr_gamma**passed


def _optimizer(nets: Networks, train: TrainSpec) -> torch.optim.SGD:
    groups = [{"params": list(nets.backbone.parameters()), "decays": True}]
    if nets.loss_module is not None:
        groups.append({"params": list(nets.loss_module.parameters()), "decays": None})
    return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def _batch_loss(nets: Networks, x: torch.Tensor, y: torch.Tensor, train: TrainSpec, detach_taps: bool) -> torch.Tensor:
    out = nets.backbone(x)
    per_sample = F.cross_entropy(out.logits, y, reduction="none")  # [B]
    loss = per_sample.mean()
    if nets.loss_module is not None:
        taps = [t.detach() for t in out.taps] if detach_taps else out.taps
        predicted = nets.loss_module(taps)
        loss = loss + train.lpl_weight * loss_prediction_loss(predicted, per_sample, train.lpl_margin)
    return loss


def train_round(
    nets: Networks,
    images: torch.Tensor,  # uint8 [N, C, H, W], on the training device
    labels: torch.Tensor,  # int64 [N], same device
    labeled: np.ndarray,  # global pool indices of the labeled set
    train: TrainSpec,
    objective: Objective,
    normalize: Normalizer,
    order: torch.Generator,
    augment: torch.Generator,
) -> TrainStats:
    """Trains `nets` in place on the labeled set for `train.epochs` epochs."""
    optimizer = _optimizer(nets, train)
    for group in optimizer.param_groups:
        group["decays"] = True if group["decays"] else objective.module_lr_decay
    labeled_t = torch.as_tensor(np.sort(labeled), dtype=torch.long)
    device = images.device
    for module in nets.modules():
        module.train()
        module.to(memory_format=torch.channels_last)  # NHWC convs: 1.25x on the small CNN on CPU (bench/train.py)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16")
    epoch_loss = 0.0
    for epoch in range(train.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, train, group["decays"])
        permutation = labeled_t[torch.randperm(len(labeled_t), generator=order)]
        total = torch.zeros((), device=images.device)
        for start in range(0, len(permutation), train.batch_size):
            batch = permutation[start : start + train.batch_size].to(images.device)
            x = images[batch]
            if train.augment:
                x = random_crop_and_flip(x, train.crop_padding, train.hflip, augment)
            x = normalize(x).contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = _batch_loss(nets, x, labels[batch], train, detach_taps=epoch > train.lpl_detach_epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        epoch_loss = float(total) / len(permutation)
        if not math.isfinite(epoch_loss):
            raise DivergedError(
                f"training diverged: the mean loss of epoch {epoch} is {epoch_loss} (lr {lr_at(epoch, train)}, "
                f"{len(labeled)} labeled images). Lower train.lr in the grid, or check the data normalisation."
            )
    for module in nets.modules():  # scoring and evaluation see the layout they are tested with
        module.to(memory_format=torch.contiguous_format)
    return TrainStats(epochs=train.epochs, final_loss=epoch_loss)
