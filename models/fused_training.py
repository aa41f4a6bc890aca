"""One round of training for a group of trials at once: their networks stacked and stepped as one (fused trials).

Trials that train the same networks with the same objective and schedule, on labeled sets of the same size,
can advance in lockstep (HFTA, Wang et al. 2021: many small models trained as one keep a GPU busy where one
alone leaves it launch-bound). Each member's parameters and BatchNorm buffers become one slice of stacked
tensors (`torch.func.stack_module_state`), and `torch.func.vmap` runs every member's forward and loss as one
batched computation: one kernel per layer for the whole group instead of one per member.

What stays each member's own: its labeled set, its data-order and augmentation streams (drawn in the same
order as `models.training.train_round` draws them), its BatchNorm statistics (a slice of the stacked buffers),
its optimiser state (SGD is elementwise, so one optimiser over stacked tensors steps each slice as its own would)
and its divergence check. Summing the members' losses before the backward pass gives each slice exactly its
member's gradient, since no member's loss depends on another's parameters.

The result equals separate training within float tolerance, not bit for bit: a batched convolution is not the
same kernel as a member's own. `tests/models/test_fused_training.py` measures the difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from experiments.errors import DivergedError
from experiments.specs import TrainSpec
from models.augment import Normalizer, random_crop_and_flip
from models.networks import BACKBONE, Networks
from models.objective import Objective
from models.schedule import check_epoch_loss, lr_at
from models.training import TrainStats


@dataclass
class FusedMember:
    """One member of a fused round: its networks (trained in place), labeled set and its two random streams."""

    nets: Networks
    labeled: np.ndarray
    order: torch.Generator
    augment: torch.Generator


class _Joint(nn.Module):
    """A member's networks as one module whose forward is the objective's loss, so `functional_call` can swap
    in one slice of the stacked parameters for all of them at once."""

    def __init__(self, nets: Networks, objective: Objective) -> None:
        super().__init__()
        self.networks = nn.ModuleDict(nets.named())
        self.objective = objective

    def forward(self, x: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        named = dict(self.networks.items())
        backbone = named.pop(BACKBONE)
        nets = Networks(backbone, named)
        return self.objective.loss(nets, backbone(x), labels, epoch)


def check_fusable(members: list[FusedMember]) -> None:
    """Lockstep needs labeled sets of one size (the same batches per epoch) and networks of one structure."""
    sizes = {len(m.labeled) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"fused members must have labeled sets of one size, got sizes {sorted(sizes)}")
    shapes = {tuple((k, tuple(v.shape)) for k, v in _state(m.nets).items()) for m in members}
    if len(shapes) != 1:
        raise ValueError("fused members must train networks of one structure (same model and auxiliary networks)")


def _state(nets: Networks) -> dict[str, torch.Tensor]:
    return nn.ModuleDict(nets.named()).state_dict()


def train_round_fused(
    members: list[FusedMember],
    images: torch.Tensor,  # uint8 [N, C, H, W], on the training device, shared by the members
    labels: torch.Tensor,  # int64 [N], same device
    train: TrainSpec,
    objective: Objective,
    normalize: Normalizer,
) -> list[TrainStats | DivergedError]:
    """Trains every member's networks in place for `train.epochs` epochs, as `train_round` would one by one.

    Returns, per member, its TrainStats, or the DivergedError that would have stopped it alone: a diverged member
    is computed to the end of the round with the others (its slice cannot touch theirs) and reported, not raised.
    """
    check_fusable(members)
    joints = [_Joint(m.nets, objective) for m in members]
    for joint in joints:
        joint.train()
    params, buffers = stack_module_state(joints)  # leaves [K, ...] that require grad; buffers [K, ...]
    template = copy.deepcopy(joints[0]).to("meta")

    def member_loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return functional_call(template, (p, b), (x, y, epoch))

    names = list(members[0].nets.named())
    groups = [
        {
            "params": [p for key, p in params.items() if key.split(".")[1] == name],
            "decays": name == BACKBONE or objective.lr_follows_schedule(name),
        }
        for name in names
    ]
    optimizer = torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16")
    labeled = [torch.as_tensor(np.sort(m.labeled), dtype=torch.long) for m in members]
    n = len(labeled[0])
    outcome: list[TrainStats | DivergedError | None] = [None] * len(members)
    epoch_losses = [0.0] * len(members)
    for epoch in range(train.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, train, group["decays"])
        permutations = [lab[torch.randperm(n, generator=m.order)] for lab, m in zip(labeled, members, strict=True)]
        totals = torch.zeros(len(members), device=images.device)
        for start in range(0, n, train.batch_size):
            batches = [p[start : start + train.batch_size].to(images.device) for p in permutations]
            xs = []
            for batch, m in zip(batches, members, strict=True):
                x = images[batch]
                if train.augment:
                    x = random_crop_and_flip(x, train.crop_padding, train.hflip, m.augment)
                xs.append(normalize(x))
            x, y = torch.stack(xs), torch.stack([labels[b] for b in batches])
            with autocast:
                losses = vmap(member_loss, in_dims=(0, 0, 0, 0, None))(params, buffers, x, y, epoch)  # [K]
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            totals += losses.detach() * len(batches[0])  # as train_round sums: in place into float32
        for i, total in enumerate(totals.tolist()):
            epoch_losses[i] = total / n
            if outcome[i] is None:
                try:
                    check_epoch_loss(epoch, epoch_losses[i], train, n)
                except DivergedError as error:
                    outcome[i] = error
    with torch.no_grad():
        for i, joint in enumerate(joints):
            joint.load_state_dict({**{k: v[i] for k, v in params.items()}, **{k: v[i] for k, v in buffers.items()}})
    return [
        o if o is not None else TrainStats(epochs=train.epochs, final_loss=epoch_losses[i])
        for i, o in enumerate(outcome)
    ]
