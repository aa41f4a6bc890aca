"""Sharded pool scoring inside a trial's placement group: shard 0 in the trial's own process, the rest on actors.

Each actor receives the trial's train images once, through the object store, when it is created; per round
it receives only the weights of the trial's networks (one object shared by all actors), its shard's pool
indices and the strategy.
"""

from __future__ import annotations

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from experiments.plugins import PluginError, PluginImportError, PluginVersionError
from experiments.specs import TrialSpec
from models import build_model
from models.augment import Normalizer
from models.networks import Networks, Weights
from orchestrator.engine.query import score_shard
from orchestrator.run.ray_cluster import claim_device
from strategies import Strategy, build_strategy
from strategies.base import ScoringInputs, ShardResult
from strategies.scoring_heap import ScoringHeap, run_scoring, set_scoring_heap


@ray.remote
class ScoringShard:
    """Holds the pool images and a copy of the trial's networks (the backbone and the strategy's own)."""

    def __init__(
        self,
        spec_json: str,
        images: torch.Tensor,
        normalize: Normalizer,
        n_classes: int,
        heap: ScoringHeap,
        bundle: dict[str, float],
    ) -> None:
        self.device = claim_device(bundle)
        spec = TrialSpec.model_validate_json(spec_json)
        set_scoring_heap(heap)
        self.images = images.to(self.device)
        image_shape = tuple(images.shape[1:])
        backbone = build_model(spec.model, n_classes, image_shape[0], spec.plugins.get("model"))
        networks = build_strategy(spec.strategy, spec.plugins.get("strategy")).auxiliary_networks
        auxiliary = {name: build(backbone, image_shape).to(self.device) for name, build in networks.items()}
        self.nets = Networks(backbone.to(self.device), auxiliary)
        self.normalize = normalize

    def score(
        self, strategy: Strategy, weights: Weights, pool_indices: np.ndarray, options: dict, b: int
    ) -> ShardResult:
        self.nets.load(weights)
        inputs = ScoringInputs(
            self.nets.backbone,
            self.images[torch.as_tensor(pool_indices)],
            pool_indices,
            self.normalize,
            networks=self.nets.auxiliary,
            **options,
        )
        return run_scoring(lambda: score_shard(strategy, inputs, b))


class ShardPool:
    """A ShardMapper backed by actors in bundles 1..k-1 of the trial's placement group."""

    def __init__(
        self,
        spec: TrialSpec,
        images: torch.Tensor,
        normalize: Normalizer,
        n_classes: int,
        n_shards: int,
        bundle: dict[str, float],
        heap: ScoringHeap = "fast",
    ) -> None:
        group = ray.util.get_current_placement_group()
        images_ref = ray.put(images)  # once per trial, shared by every shard actor
        self.actors = [
            ScoringShard.options(
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
                if group is not None
                else None,
            ).remote(spec.model_dump_json(), images_ref, normalize, n_classes, heap, bundle)
            for i in range(1, n_shards)
        ]

    def __call__(self, strategy: Strategy, shards: list[ScoringInputs], b: int) -> list[ShardResult]:
        weights = ray.put(Networks(shards[0].backbone, dict(shards[0].networks)).weights())
        futures = [
            actor.score.remote(strategy, weights, shard.pool_indices, _options(shard), b)
            for actor, shard in zip(self.actors, shards[1:], strict=False)
        ]
        local = run_scoring(lambda: score_shard(strategy, shards[0], b))  # overlaps the remote shards
        try:
            remote = ray.get(futures)
        except ray.exceptions.RayActorError as error:  # an actor that could not start: a plugin its node lacks?
            raise plugin_error_of(error) or error from None
        return [local, *remote]

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def plugin_error_of(error: Exception) -> PluginError | None:
    """A shard actor's start that failed on a plugin (missing on its node, or another version there), as the
    albench error it was: then the trial fails at once, as a retry would fail alike."""
    for line in str(error).splitlines():
        for kind in (PluginImportError, PluginVersionError):
            if line.strip().startswith(f"{kind.__module__}.{kind.__name__}: ") or line.strip().startswith(
                f"{kind.__name__}: "
            ):
                return kind(f"a scoring shard's actor did not start: {line.strip().split(': ', 1)[1]}")
    return None


def _options(shard: ScoringInputs) -> dict:
    return {
        "batch_size": shard.batch_size,
        "selection_key": shard.selection_key,
        "augment_padding": shard.augment_padding,
    }
