"""LearningLoss (Yoo & Kweon, CVPR 2019): query the samples whose predicted loss is highest."""

from __future__ import annotations

from models.objective import Objective
from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs


class LearningLossStrategy(Strategy):
    """Score = the loss-prediction module's output on the backbone's taps (eval mode, test-time views).

    Trained jointly (ce+lpl); as in the reference, the module's LR decays with the backbone's.
    """

    name = "learning_loss"
    objective = Objective(loss_prediction=True, module_lr_decay=True)

    def score(self, inputs: ScoringInputs) -> ShardResult:
        if inputs.loss_module is None:
            raise ValueError("learning_loss scores with the loss-prediction module, but none was trained")
        return ShardResult(inputs.pool_indices, scores=map_outputs(inputs, lambda out: inputs.loss_module(out.taps)))
