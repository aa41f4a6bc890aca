"""FisherMask (Gul et al. 2024): the BAIT Fisher-trace greedy on gradients restricted to a Fisher-chosen mask.

Per round, before the shard map (`prepare`, once, shared by every shard):
  1. the model-expected Fisher diagonal F_i = sum_n sum_c p_c (d log p_c / d theta_i)^2 on a random sample of
     `samples` (1,024) points of the round's pool (the scored subset plus the labeled set);
  2. the mask: the whole last-layer weight, plus the `mask_size - |last weight|` largest F_i among every other
     parameter tensor (convs, BN weights and biases, the last-layer bias), pooled across layers.
Map over shards: V_x[c, :] = d log p_c(x) / d theta at the mask, for every class, with no sqrt(p_c) weighting
(the reference's choice; BAIT weights by sqrt(p_c)). Select: `fisher_greedy` with F_U over the round's pool,
F_L over the labeled set, lambda = 1, no oversampling (the reference's HEAD defaults).

Deviations from the public code (ALGORITHMS.md section 4 and note D), each deliberate:
- The mask sample is random, not the first 1,024 images in storage order (class-biased in sorted pools).
- The pool is the round's scored subset plus the labeled set (the reference has no subset: the same when the
  regime's subset is unset).
- Views are test-time by default; `query: {score_augmented: true}` gives the reference's train-transform views.
- The mask size is an absolute count, default |last weight| + 1,024: the greedy's setup costs O(N C K^2 + K^3),
  each pick O(N C^2 K + C K^2), and it holds 2 N C K float64 numbers, so K is what makes it tractable. The
  reference's 0.2 % of a 0.7 M-parameter narrow ResNet (K = 1,402) would be K = 22,348 on the 11.2 M-parameter
  ResNet-18 used here: 3.6x the default's memory and about 13x its setup time (K = 6,144 for C = 10, d = 512).
- Our heads have a bias; "the whole last layer" is its weight (as the reference's bias-free head), and the bias
  competes with the other tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from experiments.errors import ConfigError
from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.fisher_features import Mask, fisher_diagonal, masked_log_prob_grads
from strategies.fisher_greedy import fisher_greedy
from strategies.settings import StrategySettings
from strategies.views import uniform_hash

MASK_SAMPLE_SALT = 0x5EED_F15E
DEFAULT_EXTRA_ENTRIES = 1024


def last_layer_weight(model: nn.Module) -> str:
    """'name.weight' of the model's last nn.Linear: the head whose weight the mask always keeps."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("fishermask needs a model with a linear head (an nn.Linear producing the logits)")
    return f"{linears[-1]}.weight"


def build_mask(fisher: dict[str, torch.Tensor], always: str | None, mask_size: int) -> Mask:
    """The whole `always` tensor plus the top-Fisher entries of every other tensor, `mask_size` entries in all.

    Ties are broken by (tensor order, flat index), so the mask is deterministic.
    """
    keys = [k for k in fisher if k != always]
    kept = 0 if always is None else fisher[always].numel()
    extra = mask_size - kept
    if extra < 0:
        raise ConfigError(
            f"fishermask: mask_size {mask_size} is smaller than the last-layer weight ({kept} entries) that the mask "
            f"always keeps; in the grid give it at least that many, {{name: fishermask, mask_size: {kept}}}, "
            "or let the mask drop it: {name: fishermask, whole_last_layer: false}"
        )
    values = torch.cat([fisher[k].flatten().double().cpu() for k in keys]) if keys else torch.zeros(0)
    order = torch.sort(values, descending=True, stable=True).indices[: min(extra, len(values))]
    offsets = np.cumsum([0] + [fisher[k].numel() for k in keys])
    mask: Mask = {}
    for key in fisher:  # model order
        if key == always:
            mask[key] = torch.arange(fisher[key].numel())
            continue
        i = keys.index(key)
        inside = order[(order >= offsets[i]) & (order < offsets[i + 1])] - int(offsets[i])
        if len(inside):
            mask[key] = torch.sort(inside).values
    return mask


class FisherMaskSettings(StrategySettings):
    mask_size: PositiveInt | None = None  # K entries; None = the whole last-layer weight + 1,024
    whole_last_layer: bool = True  # the mask always keeps the whole last-layer weight
    samples: PositiveInt = 1024  # random pool points of the Fisher-diagonal estimate
    lam: PositiveFloat = 1.0  # the greedy's ridge (the reference's lamb)
    renamed_from: ClassVar[dict[str, str]] = {
        "fisher_mask_size": "mask_size",
        "fisher_mask_whole_last_layer": "whole_last_layer",
        "fisher_mask_samples": "samples",
        "fisher_lambda": "lam",
    }


class FisherMaskStrategy(Strategy):
    name = "fishermask"
    Settings = FisherMaskSettings
    query_cost = 60.0  # mask, masked gradients, Fisher greedy: 816 s a trial against 10 s (cifar10_subset grid)
    mask: Mask | None = None  # this round's, set on the copy `prepare` returns

    def candidates(self, subset: np.ndarray, labeled: np.ndarray) -> np.ndarray:
        return np.union1d(subset, labeled)  # the labeled set enters F_U and F_L

    def prepare(
        self, make_inputs: Callable[[np.ndarray], ScoringInputs], candidates: np.ndarray, selection_key: int
    ) -> FisherMaskStrategy:
        """This round's mask, from the Fisher diagonal on a seeded random sample of the round's pool."""
        settings = self.settings
        ranks = np.argsort(uniform_hash(selection_key ^ MASK_SAMPLE_SALT, candidates), kind="stable")
        inputs = make_inputs(np.sort(candidates[ranks[: settings.samples]]))
        images = torch.cat([x for _, x in inputs.batches()])
        fisher = fisher_diagonal(inputs.backbone, images, chunk_size=min(inputs.batch_size, 64))
        always = last_layer_weight(inputs.backbone) if settings.whole_last_layer else None
        size = settings.mask_size
        if size is None:
            size = (fisher[always].numel() if always else 0) + DEFAULT_EXTRA_ENTRIES
        prepared = copy.copy(self)
        prepared.mask = build_mask(fisher, always, size)
        return prepared

    def score(self, inputs: ScoringInputs) -> ShardResult:
        if self.mask is None:
            raise RuntimeError("fishermask: score() needs the round's mask; the engine calls prepare() first")
        parts = [masked_log_prob_grads(inputs.backbone, x, self.mask, inputs.batch_size) for _, x in inputs.batches()]
        v = torch.cat(parts).detach().float().cpu().numpy()  # [n, C, K]
        return ShardResult(inputs.pool_indices, features=v.reshape(len(v), -1), factor_split=v.shape[1])

    def reduce(self, result: ShardResult, b: int) -> ShardResult:
        return result  # a global selection

    def select(self, merged: ShardResult, b: int, labeled: np.ndarray, selection_key: int = 0) -> np.ndarray:
        v = merged.features.reshape(len(merged.pool_indices), merged.factor_split, -1)
        positions = fisher_greedy(v, np.isin(merged.pool_indices, labeled), b, self.settings.lam, oversample=1)
        return merged.pool_indices[positions]
