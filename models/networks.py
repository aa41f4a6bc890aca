"""The trainable parts of a trial: the backbone, and the networks its strategy declares, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

BACKBONE = "backbone"

Weights = dict[str, dict[str, torch.Tensor]]  # network name -> state_dict


@dataclass
class Networks:
    """`auxiliary` holds the strategy's own networks (e.g. LearningLoss's 'loss_module'); empty for most."""

    backbone: nn.Module
    auxiliary: dict[str, nn.Module] = field(default_factory=dict)

    def named(self) -> dict[str, nn.Module]:
        """Every network by name, the backbone first (the order of the optimiser's parameter groups)."""
        return {BACKBONE: self.backbone, **self.auxiliary}

    def weights(self) -> Weights:
        """CPU copies of every network's state, for a checkpoint."""
        return {
            name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            for name, module in self.named().items()
        }

    def load(self, weights: Weights) -> None:
        """Loads a checkpoint's states; the names must be exactly this trial's networks."""
        if set(weights) != set(self.named()):
            raise KeyError(f"the weights hold networks {sorted(weights)}, this trial trains {sorted(self.named())}")
        for name, module in self.named().items():
            module.load_state_dict(weights[name])
