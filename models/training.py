"""One round of training: SGD with momentum and weight decay, a step LR schedule, batched device-side augmentation.

The optimiser is created afresh each round (the references reset momentum every cycle) and the LR follows
lr * gamma^(milestones passed) per epoch, so a round's training is a pure function of the weights it
starts from, the labeled set and its two random streams (data order, augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from experiments.specs import TrainSpec
from models.augment import Normalizer, random_crop_and_flip
from models.captured import train_round_static
from models.networks import BACKBONE, Networks
from models.objective import Objective
from models.schedule import check_epoch_loss, lr_at


@dataclass(frozen=True)
class TrainStats:
    epochs: int
    final_loss: float  # mean training loss of the last epoch
    step: str = "eager"  # how the steps ran: "eager", or "captured" (CUDA graphs, `train.step`)


def _optimizer(nets: Networks, train: TrainSpec, objective: Objective) -> torch.optim.SGD:
    """One parameter group per network, the backbone first; each remembers whether its LR follows the schedule."""
    groups = [
        {"params": list(module.parameters()), "decays": name == BACKBONE or objective.lr_follows_schedule(name)}
        for name, module in nets.named().items()
    ]
    return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


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
    """Trains `nets` in place on the labeled set for `train.epochs` epochs.

    `train.step: captured` replays the steps from CUDA graphs on a CUDA device (`models.captured`); everywhere
    else the eager loop below runs, so no CPU record depends on that setting.
    """
    if train.step == "captured" and images.device.type == "cuda":
        loss, _ = train_round_static(
            nets, images, labels, labeled, train, objective, normalize, order, augment, capture=True
        )
        return TrainStats(epochs=train.epochs, final_loss=loss, step="captured")
    optimizer = _optimizer(nets, train, objective)
    labeled_t = torch.as_tensor(np.sort(labeled), dtype=torch.long)
    device = images.device
    for module in nets.named().values():
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
                loss = objective.loss(nets, nets.backbone(x), labels[batch], epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        epoch_loss = float(total) / len(permutation)
        check_epoch_loss(epoch, epoch_loss, train, len(labeled))
    for module in nets.named().values():  # scoring and evaluation see the layout they are tested with
        module.to(memory_format=torch.contiguous_format)
    return TrainStats(epochs=train.epochs, final_loss=epoch_loss)
