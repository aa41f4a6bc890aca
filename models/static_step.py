"""The training step in a form a CUDA graph can capture: fixed buffers in, state updated in place, no host sync.

Eager training (`models.training.train_round`) builds its step from Python values: a host copy of each
batch's indices and draws, `torch.optim.SGD` with a Python-float LR, and the loss summed per batch. A graph
replays kernels on fixed memory, so this step instead:
- reads the batch from device buffers (`models.batches`);
- keeps each parameter group's LR as a device tensor, filled once per epoch: an LR milestone needs no
  recapture;
- updates with SGD's own algebra (weight decay, momentum, the LR) as foreach kernels over momentum buffers
  allocated before any capture, so the first step's zero buffer gives exactly eager SGD's clone of the grad;
- adds the batch's loss to a device accumulator, read once per epoch for the divergence check.

It runs eagerly on any device, which is how the CPU tests check its algebra and data against eager training;
`models.captured` replays it from CUDA graphs. The one numerical difference from eager SGD is the LR product,
rounded before it is added (eager fuses it as `alpha`): agreement is to float rounding, not bit for bit.
"""

from __future__ import annotations

import torch

from experiments.specs import TrainSpec
from models.augment import Normalizer, crop_and_flip
from models.networks import Networks
from models.objective import Objective


class StaticStep:
    """One trial round's step state: LR tensors, momentum buffers and the loss accumulator, on the device."""

    def __init__(
        self,
        nets: Networks,
        images: torch.Tensor,  # uint8 [N, C, H, W], on the training device
        labels: torch.Tensor,  # int64 [N], same device
        train: TrainSpec,
        objective: Objective,
        normalize: Normalizer,
        decays: list[bool],  # per network (backbone first): whether its LR follows the schedule
    ) -> None:
        device = images.device
        self.nets, self.images, self.labels, self.train, self.objective = nets, images, labels, train, objective
        shape = (1, len(normalize.mean), 1, 1)
        # built once: a graph cannot copy a host list to the device inside its capture
        self.mean = torch.tensor(normalize.mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(normalize.std, dtype=torch.float32, device=device).view(shape)
        self.groups = [list(module.parameters()) for module in nets.named().values()]
        self.decays = decays
        self.neg_lr = [torch.full((), -train.lr, dtype=torch.float32, device=device) for _ in self.groups]
        self.momentum = [[torch.zeros_like(p) for p in group] for group in self.groups]
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.autocast_dtype = torch.bfloat16 if train.precision == "bf16" else None
        self.device_type = device.type

    def set_lr(self, lr: list[float]) -> None:
        """Each group's LR for the coming epoch, written in place (no recapture, no sync)."""
        for tensor, value in zip(self.neg_lr, lr, strict=True):
            tensor.fill_(-value)

    def __call__(self, indices: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, epoch: int) -> None:
        """One SGD step on the batch `indices` (with its augmentation draws); `epoch` only selects the phase."""
        x = self.images[indices]
        if self.train.augment:
            x = crop_and_flip(x, offsets, flips, self.train.crop_padding)
        x = ((x.to(torch.float32) / 255.0 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        # no weight-cast cache: a captured graph must recompute the casts from the updated weights each replay
        with torch.autocast(
            self.device_type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None, cache_enabled=False
        ):
            loss = self.objective.loss(self.nets, self.nets.backbone(x), self.labels[indices], epoch)
        for group in self.groups:
            for p in group:
                p.grad = None
        loss.backward()
        self._sgd()
        self.total.add_(loss.detach() * len(indices))

    @torch.no_grad()
    def _sgd(self) -> None:
        """torch.optim.SGD's update (no dampening, no Nesterov) with the LR as a tensor."""
        for params, buffers, neg_lr in zip(self.groups, self.momentum, self.neg_lr, strict=True):
            stepped = [(p, b) for p, b in zip(params, buffers, strict=True) if p.grad is not None]
            if not stepped:
                continue
            params_, buffers_ = [p for p, _ in stepped], [b for _, b in stepped]
            grads = [p.grad for p in params_]
            if self.train.weight_decay != 0:
                grads = torch._foreach_add(grads, params_, alpha=self.train.weight_decay)
            if self.train.momentum != 0:
                torch._foreach_mul_(buffers_, self.train.momentum)
                torch._foreach_add_(buffers_, grads)
                grads = buffers_
            torch._foreach_add_(params_, torch._foreach_mul(grads, neg_lr))
