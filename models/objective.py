"""What a strategy asks of training: plain cross-entropy, or cross-entropy plus the loss-prediction module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    loss_prediction: bool = False  # train a LossPredictionModule jointly (LL4AL margin-ranking loss)
    module_lr_decay: bool = True  # LL4AL decays the module's LR with the backbone's; LPLgrad's code never does

    @property
    def name(self) -> str:
        return "ce+lpl" if self.loss_prediction else "ce"


CROSS_ENTROPY = Objective()
