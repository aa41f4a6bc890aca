"""BALD: query the images whose prediction the model's weights disagree on most.

The score is the mutual information between an image's label and the weights (Houlsby et al. 2011), estimated
with T stochastic forward passes of MC dropout (Gal, Islam and Ghahramani 2017):

    I(x) = H[ mean_t p_t(y | x) ] - mean_t H[ p_t(y | x) ]

Dropout acts on the backbone's penultimate embedding, before its classifier head (`head`, or `linear` in
albench's own backbones): the convolutional layers run once per image, the head T times. Each image's T dropout
masks are drawn from `seeded_uniform` over (the round's selection key, the pass, the image's pool index and the
unit), so an image gets the same masks whichever shard or chunk it is scored in: picks do not depend on sharding.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from albench.api import ConfigError, ScoringInputs, ShardResult, Strategy, StrategySettings, eval_mode, seeded_uniform


class BaldSettings(StrategySettings):
    """MC-dropout passes per image, and the probability that a unit of the embedding is dropped in each."""

    samples: int = Field(default=20, gt=1)
    dropout: float = Field(default=0.5, gt=0, lt=1)


class BaldStrategy(Strategy):
    name = "bald"
    Settings = BaldSettings
    query_cost = 1 / 3  # one forward pass of the backbone per image; the head's T passes are negligible

    def score(self, inputs: ScoringInputs) -> ShardResult:
        head = classifier_head(inputs.backbone)
        scores = []
        with eval_mode(inputs.backbone), torch.no_grad():
            for positions, x in inputs.batches():
                embedding = inputs.backbone(x).embedding
                masks = self.masks(inputs.selection_key, inputs.pool_indices[positions], embedding.shape[1])
                scores.append(self.mutual_information(head, embedding, masks.to(embedding.device)))
        values = torch.cat(scores).double().cpu().numpy() if scores else np.zeros(0)
        return ShardResult(inputs.pool_indices, scores=values)

    def masks(self, key: int, pool_indices: np.ndarray, width: int) -> torch.Tensor:
        """Keep-masks [T, n, width] of the n images: unit j of image i kept in pass t iff its draw >= dropout."""
        units = pool_indices.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
        draws = np.stack([seeded_uniform(key * 1_000_003 + t, units.ravel()) for t in range(self.settings.samples)])
        return torch.from_numpy(draws.reshape(self.settings.samples, len(pool_indices), width) >= self.settings.dropout)

    def mutual_information(self, head: nn.Module, embedding: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """I(x) for each image, from the head's T passes over its masked, rescaled embedding."""
        scaled = embedding.unsqueeze(0) * keep / (1 - self.settings.dropout)  # [T, n, d]
        log_p = torch.log_softmax(head(scaled).double(), dim=-1)  # [T, n, C]
        p = log_p.exp()
        mean_p = p.mean(0)
        entropy_of_mean = -(mean_p * torch.log(mean_p.clamp_min(1e-300))).sum(-1)
        mean_entropy = -(p * log_p).sum(-1).mean(0)
        return (entropy_of_mean - mean_entropy).clamp_min(0)


def classifier_head(backbone: nn.Module) -> nn.Module:
    """The layer that maps the embedding to logits: `head` (this package's mc_cnn) or `linear` (albench's own)."""
    for name in ("head", "linear"):
        layer = getattr(backbone, name, None)
        if isinstance(layer, nn.Module):
            return layer
    raise ConfigError(
        f"bald needs a backbone whose classifier head is an attribute 'head' or 'linear' (the layer that maps the "
        f"embedding to logits); {type(backbone).__name__} has neither. Use model mc_cnn, small_cnn or resnet18"
    )
