"""A round's training replayed from CUDA graphs (the `train: {step: captured}` setting), and the loop driving it.

Eager training is launch-bound on a large GPU: ResNet-18 at batch 128 spends its step launching kernels from
Python. A CUDA graph launches the whole step (augmentation, forward, the objective's loss, backward, SGD) at
once. What a graph fixes, and how the round keeps eager training's meaning:
- **Shapes.** One graph per (phase, batch size): the full batch and the partial tail each get their own, so
  every epoch trains on exactly eager's batches. The objective's phase (`Objective.phase`: e.g. the taps
  attached or detached) is a Python branch, so each phase has its own graphs; an LR milestone is not a phase,
  the LR being a device tensor (`models.static_step`).
- **Capture lazily.** The first step of each (phase, size) runs eagerly on a side stream (the warm-up CUDA
  graphs need: cuDNN and autograd set up outside the capture), and is a real training step; the graph is
  captured at the next step of that key and replayed from then on. No step is trained twice or skipped.
- **Inputs.** The epoch's indices and draws are staged on the device at its start (`models.batches`), from
  the same streams in the same order as eager training; each replay copies its batch's row into the graph's
  buffers (device to device).
- **Syncs.** One per epoch: the loss accumulator's read, for the divergence check.

`train_round_static` runs the same loop with the step called eagerly where there is no CUDA: that is how the
CPU tests check the step's data, phases, LR and algebra against eager training. `models.training.train_round`
uses neither on a CPU, so CPU records are untouched.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch

from experiments.specs import TrainSpec
from models.augment import Normalizer
from models.batches import Batches, batch_sizes, stage_epoch
from models.networks import BACKBONE, Networks
from models.objective import Objective
from models.schedule import check_epoch_loss, lr_at
from models.static_step import StaticStep


def graph_keys(train: TrainSpec, objective: Objective, n_labeled: int) -> list[tuple[Hashable, int]]:
    """The (phase, batch size) graphs a round captures, in the order it first needs them."""
    keys: list[tuple[Hashable, int]] = []
    for epoch in range(train.epochs):
        for size in batch_sizes(n_labeled, train.batch_size):
            if (key := (objective.phase(epoch), size)) not in keys:
                keys.append(key)
    return keys


class EagerSteps:
    """Calls the static step directly: any device, no graphs (the CPU's view of the captured round)."""

    def __init__(self, step: StaticStep) -> None:
        self.step = step

    def __call__(self, batches: Batches, index: int, epoch: int) -> None:
        self.step(batches.indices[index], batches.offsets[index], batches.flips[index], epoch)


class CapturedSteps:
    """Replays the static step from one CUDA graph per (phase, batch size), captured at its second use."""

    def __init__(self, step: StaticStep) -> None:
        self.step = step
        self.warmed: set[tuple[Hashable, int]] = set()
        self.graphs: dict[tuple[Hashable, int], torch.cuda.CUDAGraph] = {}
        self.inputs: dict[tuple[Hashable, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def captures(self) -> int:
        return len(self.graphs)

    def __call__(self, batches: Batches, index: int, epoch: int) -> None:
        key = (self.step.objective.phase(epoch), batches.size)
        row = (batches.indices[index], batches.offsets[index], batches.flips[index])
        if key not in self.warmed:  # a real step, eagerly on a side stream: the warm-up before capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(*row, epoch)
            torch.cuda.current_stream().wait_stream(side)
            self.warmed.add(key)
            return
        if key not in self.graphs:
            buffers = tuple(torch.empty_like(tensor) for tensor in row)
            for buffer, tensor in zip(buffers, row, strict=True):
                buffer.copy_(tensor)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records, does not run: the replay below trains this step
                self.step(*buffers, epoch)
            self.graphs[key], self.inputs[key] = graph, buffers
        for buffer, tensor in zip(self.inputs[key], row, strict=True):
            buffer.copy_(tensor)
        self.graphs[key].replay()


def train_round_static(
    nets: Networks,
    images: torch.Tensor,
    labels: torch.Tensor,
    labeled: np.ndarray,
    train: TrainSpec,
    objective: Objective,
    normalize: Normalizer,
    order: torch.Generator,
    augment: torch.Generator,
    capture: bool,
) -> tuple[float, int]:
    """Trains `nets` in place like `train_round`; returns (the last epoch's mean loss, graphs captured)."""
    device = images.device
    if capture and device.type != "cuda":
        raise ValueError(f"a captured training step needs a CUDA device; the data are on {device}")
    decays = [name == BACKBONE or objective.lr_follows_schedule(name) for name in nets.named()]
    for module in nets.named().values():
        module.train()
        module.to(memory_format=torch.channels_last)
    step = StaticStep(nets, images, labels, train, objective, normalize, decays)
    steps = CapturedSteps(step) if capture else EagerSteps(step)
    labeled_t = torch.as_tensor(np.sort(labeled), dtype=torch.long)
    epoch_loss = 0.0
    for epoch in range(train.epochs):
        step.set_lr([lr_at(epoch, train, d) for d in decays])
        step.total.zero_()
        batches = stage_epoch(labeled_t, train, order, augment, device)
        for part, index in batches.in_order():
            steps(part, index, epoch)
        epoch_loss = float(step.total) / len(labeled_t)  # the epoch's one host sync
        check_epoch_loss(epoch, epoch_loss, train, len(labeled))
    for module in nets.named().values():
        module.to(memory_format=torch.contiguous_format)
    return epoch_loss, steps.captures if isinstance(steps, CapturedSteps) else 0
