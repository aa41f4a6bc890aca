"""One active-learning trial, in one process, without Ray or MLflow: a pure function of its spec and seed.

Each round: train on the labeled set -> test -> draw a random unlabeled subset -> map the strategy over
shards of it -> merge -> select b -> label them. After every round the caller gets the trial's state (to
checkpoint it and write the round's record); a trial started from such a state ends exactly as one that
was never interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from experiments.datasets import Dataset
from experiments.errors import ConfigError
from experiments.specs import TrialSpec
from models import LossPredictionModule, build_model, tap_channels
from models.augment import Normalizer
from models.evaluation import evaluate
from models.training import Networks, train_round
from orchestrator.query import ShardMapper, draw_subset, map_shards_locally, query
from orchestrator.records import RoundRecord, TrialState
from orchestrator.streams import generator, seeded_global_rng, stream_key
from strategies import Strategy, build_strategy
from strategies.base import ScoringInputs


@dataclass
class TrialContext:
    """What stays fixed through a trial: its spec, strategy, and the dataset resident on the device."""

    spec: TrialSpec
    strategy: Strategy
    dataset: Dataset
    images: torch.Tensor  # uint8 train pool on the device
    labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    normalize: Normalizer
    n_shards: int = 1
    map_shards: ShardMapper = map_shards_locally

    @classmethod
    def create(cls, spec: TrialSpec, dataset: Dataset, device: str | torch.device, **options) -> TrialContext:
        check_budget_fits(spec, dataset)
        return cls(
            spec,
            build_strategy(spec.strategy, spec.query),
            dataset,
            dataset.train_images.to(device),
            dataset.train_labels.to(device),
            dataset.test_images.to(device),
            dataset.test_labels.to(device),
            Normalizer(dataset.mean, dataset.std),
            **options,
        )

    def scoring_inputs(self, nets: Networks, pool_indices: np.ndarray, round_index: int) -> ScoringInputs:
        augmented = self.spec.query.score_augmented and self.spec.train.augment
        return ScoringInputs(
            nets.backbone,
            nets.loss_module,
            self.images[torch.as_tensor(pool_indices)],
            pool_indices,
            self.normalize,
            self.spec.query.score_batch_size,
            stream_key(self.spec.seed, round_index, "select"),
            self.spec.train.crop_padding if augmented else None,
        )


def check_budget_fits(spec: TrialSpec, dataset: Dataset) -> None:
    """A budget larger than the pool cannot be reached: refuse before any training."""
    if spec.regime.budget > dataset.n_train:
        raise ConfigError(
            f"regime '{spec.regime_name}': budget {spec.regime.budget} exceeds the train pool of '{dataset.name}' "
            f"({dataset.n_train} images); lower the budget to at most {dataset.n_train}"
        )


def build_networks(spec: TrialSpec, dataset: Dataset, strategy: Strategy, device: str | torch.device) -> Networks:
    """Initial weights from the seed's 'init' streams: every strategy of a seed starts from the same backbone."""
    with seeded_global_rng(spec.seed, 0, "init"):
        backbone = build_model(spec.model, dataset.n_classes, dataset.image_shape[0])
    loss_module = None
    if strategy.objective.loss_prediction:
        with seeded_global_rng(spec.seed, 0, "init_loss_module"):
            loss_module = LossPredictionModule(tap_channels(backbone, dataset.image_shape)).to(device)
    return Networks(backbone.to(device), loss_module)


def initial_state(spec: TrialSpec, dataset: Dataset) -> TrialState:
    """A random initial labeled set from the seed's 'initial' stream (the same for every strategy)."""
    labeled_round = torch.full((dataset.n_train,), -1, dtype=torch.int64)
    labeled_round[
        torch.randperm(dataset.n_train, generator=generator(spec.seed, 0, "initial"))[: spec.regime.initial]
    ] = 0
    return TrialState(spec.trial_id, labeled_round, backbone={}, loss_module=None)


def run_round(ctx: TrialContext, nets: Networks, state: TrialState, r: int) -> RoundRecord:
    """Train -> test -> subset -> query -> label. Mutates nets and state.labeled_round."""
    spec, counts = ctx.spec, ctx.spec.regime.labeled_counts
    labeled = torch.nonzero(state.labeled_round >= 0).flatten().numpy()
    start = time.perf_counter()
    stats = train_round(
        nets,
        ctx.images,
        ctx.labels,
        labeled,
        spec.train,
        ctx.strategy.objective,
        ctx.normalize,
        order=generator(spec.seed, r, "order"),
        augment=generator(spec.seed, r, "augment"),
    )
    trained = time.perf_counter()
    result = evaluate(nets.backbone, ctx.test_images, ctx.test_labels, ctx.normalize, ctx.dataset.n_classes)
    evaluated = time.perf_counter()
    picks = np.zeros(0, dtype=np.int64)
    if r + 1 < len(counts):
        subset = draw_subset(state.labeled_round, spec.regime.subset, generator(spec.seed, r, "subset"))
        make_inputs = lambda idx: ctx.scoring_inputs(nets, idx, r)  # noqa: E731
        picks = query(
            ctx.strategy,
            make_inputs,
            subset,
            labeled,
            counts[r + 1] - counts[r],
            ctx.n_shards,
            ctx.map_shards,
        )
        state.labeled_round[torch.as_tensor(picks)] = r + 1
    queried = time.perf_counter()
    return RoundRecord(
        round=r,
        n_labeled=len(labeled),
        test_accuracy=result.accuracy,
        per_class_accuracy=result.per_class_accuracy,
        train_loss=stats.final_loss,
        selected=tuple(int(i) for i in picks),
        train_seconds=trained - start,
        eval_seconds=evaluated - trained,
        query_seconds=queried - evaluated,
    )


def trial_threads(cpus_per_trial: float) -> int:
    """Torch's CPU thread count for a trial. It changes the order of floating-point sums, so every runner sets
    it from the grid's cpus_per_trial: on CPU, a trial gives bit-identical records wherever it runs."""
    return max(1, int(cpus_per_trial))


def _cpu_state(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if module is None else {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def run_trial(
    spec: TrialSpec,
    dataset: Dataset,
    *,
    device: str | torch.device = "cpu",
    state: TrialState | None = None,
    on_round: Callable[[TrialState], None] | None = None,
    max_rounds: int | None = None,
    n_shards: int = 1,
    map_shards: ShardMapper = map_shards_locally,
) -> TrialState:
    """Runs the trial's remaining rounds (from `state` if given); calls on_round(state) after each one."""
    ctx = TrialContext.create(spec, dataset, device, n_shards=n_shards, map_shards=map_shards)
    nets = build_networks(spec, dataset, ctx.strategy, device)
    if state is None:
        state = initial_state(spec, dataset)
    else:
        nets.backbone.load_state_dict(state.backbone)
        if nets.loss_module is not None:
            nets.loss_module.load_state_dict(state.loss_module)
    n_rounds = (
        len(spec.regime.labeled_counts) if max_rounds is None else min(max_rounds, len(spec.regime.labeled_counts))
    )
    for r in range(state.rounds_done, n_rounds):
        if spec.train.reinit_each_round and r > 0:
            nets = build_networks(spec, dataset, ctx.strategy, device)
        state.records.append(run_round(ctx, nets, state, r))
        state.backbone, state.loss_module = _cpu_state(nets.backbone), _cpu_state(nets.loss_module)
        if on_round is not None:
            on_round(state)
    return state
