"""Gradient-norm queries: Ent-GradNorm, Exp-GradNorm (Wang et al., AAAI 2022) and LPLgrad (Gul et al.).

All three score a sample by the norm of a loss gradient w.r.t. the main model's parameters (never the
loss-prediction module's), highest first; they differ in the loss and in how the model was trained.
"""

from __future__ import annotations

import numpy as np
import torch

from models.objective import Objective
from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import eval_mode
from strategies.gradnorm import Aggregate, Loss, per_sample_grad_norms


class GradNormStrategy(Strategy):
    """Shared map: per-sample gradient norms of `loss` over the shard, `batch_size` samples per backward."""

    loss: Loss = "entropy"
    query_cost = 1.2  # per_sample_grad_norms runs at ~0.85x a forward+backward (bench/gradnorm.py)

    def __init__(self, aggregate: Aggregate = "layer_sum", top_k: int | None = None) -> None:
        self.aggregate = aggregate
        self.top_k = top_k

    def score(self, inputs: ScoringInputs) -> ShardResult:
        parts = []
        with eval_mode(inputs.loss_module):
            for _, x in inputs.batches():
                norms = per_sample_grad_norms(
                    inputs.backbone, x, loss=self.loss, aggregate=self.aggregate, top_k=self.top_k
                )
                parts.append(norms.detach().to("cpu", torch.float64))
        scores = torch.cat(parts).numpy() if parts else np.zeros(0)
        return ShardResult(inputs.pool_indices, scores=scores)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(aggregate={self.aggregate!r}, top_k={self.top_k})"


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
    query_cost = 10.0  # a backward per class: 89 s of queries a trial against 10 s (cifar10_subset grid)


class LPLgradStrategy(GradNormStrategy):
    """LPLgrad: the Ent-GradNorm query on a model trained jointly with the loss-prediction module.

    As in the public code, the module's LR never decays (only the backbone's scheduler is stepped).
    """

    name = "lplgrad"
    objective = Objective(loss_prediction=True, module_lr_decay=False)
