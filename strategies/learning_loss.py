"""LearningLoss (Yoo & Kweon, CVPR 2019): query the samples whose predicted loss is highest."""

from __future__ import annotations

from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs
from strategies.loss_prediction import MODULE, LossPredictionSettings, TrainsLossPrediction


class LearningLossStrategy(TrainsLossPrediction, Strategy):
    """Score = the loss-prediction module's output on the backbone's taps (eval mode, test-time views).

    Trained jointly (ce+lpl); as in the reference, the module's LR decays with the backbone's.
    """

    name = "learning_loss"
    Settings = LossPredictionSettings
    module_lr_decays = True

    def score(self, inputs: ScoringInputs) -> ShardResult:
        module = inputs.networks[MODULE]
        return ShardResult(inputs.pool_indices, scores=map_outputs(inputs, lambda out: module(out.taps)))
