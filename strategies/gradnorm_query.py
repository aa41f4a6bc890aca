"""Gradient-norm queries: Ent-GradNorm, Exp-GradNorm (Wang et al., AAAI 2022) and LPLgrad (Gul et al.).

All three score a sample by the norm of a loss gradient w.r.t. the main model's parameters (never those of
a network the strategy trains beside it), highest first; they differ in the loss and in how the model was
trained.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import PositiveInt

from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import eval_mode
from strategies.gradnorm import Loss, per_sample_grad_norms
from strategies.loss_prediction import LossPredictionSettings, TrainsLossPrediction
from strategies.settings import StrategySettings


class GradNormSettings(StrategySettings):
    # layer_sum: sum over parameter tensors of each tensor's L2 norm (the public code, which produced the
    # paper's numbers); l2: the global Frobenius norm of the paper's text
    aggregate: Literal["layer_sum", "l2"] = "layer_sum"
    renamed_from: ClassVar[dict[str, str]] = {"gradnorm_aggregate": "aggregate"}


class ExpGradNormSettings(GradNormSettings):
    top_k: PositiveInt | None = None  # sum over the k likeliest classes only; None = all classes
    renamed_from: ClassVar[dict[str, str]] = {"gradnorm_aggregate": "aggregate", "expected_top_k": "top_k"}


class LPLgradSettings(GradNormSettings, LossPredictionSettings):
    renamed_from: ClassVar[dict[str, str]] = {**GradNormSettings.renamed_from, **LossPredictionSettings.renamed_from}


class GradNormStrategy(Strategy):
    """Shared map: per-sample gradient norms of `loss` over the shard, `batch_size` samples per backward."""

    loss: Loss = "entropy"
    Settings = GradNormSettings
    query_cost = 1.2  # per_sample_grad_norms runs at ~0.85x a forward+backward (bench/gradnorm.py)

    def score(self, inputs: ScoringInputs) -> ShardResult:
        parts = []
        top_k = getattr(self.settings, "top_k", None)
        with eval_mode(*inputs.networks.values()):
            for _, x in inputs.batches():
                norms = per_sample_grad_norms(
                    inputs.backbone, x, loss=self.loss, aggregate=self.settings.aggregate, top_k=top_k
                )
                parts.append(norms.detach().to("cpu", torch.float64))
        scores = torch.cat(parts).numpy() if parts else np.zeros(0)
        return ShardResult(inputs.pool_indices, scores=scores)


class EntGradNormStrategy(GradNormStrategy):
    """Entropy-GradNorm: ||grad_theta H(p(x))|| on a model trained with cross-entropy only."""

    name = "ent_gradnorm"


class ExpGradNormStrategy(GradNormStrategy):
    """Expected-GradNorm as the expected *norm* sum_c p_c ||grad_theta CE(x, c)|| (optionally top-k classes).

    The public code's SCHEME-0 loss sum_c p_c CE(x, c) equals H(p) exactly, so its 'expected' variant is
    `ent_gradnorm`; this class is the paper's reading (ALGORITHMS.md section 2), one backward per class.
    """

    name = "exp_gradnorm"
    loss = "expected_ce"
    Settings = ExpGradNormSettings
    query_cost = 10.0  # a backward per class: 89 s of queries a trial against 10 s (cifar10_subset grid)


class LPLgradStrategy(TrainsLossPrediction, GradNormStrategy):
    """LPLgrad: the Ent-GradNorm query on a model trained jointly with the loss-prediction module.

    As in the public code, the module's LR never decays (only the backbone's scheduler is stepped).
    """

    name = "lplgrad"
    Settings = LPLgradSettings
    module_lr_decays = False
