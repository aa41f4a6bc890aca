"""One active-learning trial, in one process, without Ray or MLflow: a pure function of its spec and seed.

Each round: train on the labeled set -> test (and measure the fit on the labeled set) -> draw a random
unlabeled subset -> map the strategy over
shards of it -> merge -> select b -> label them. After every round the caller gets the trial's state (to
checkpoint it and write the round's record); a trial started from such a state ends exactly as one that
was never interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from experiments.datasets import Dataset
from experiments.errors import CheckpointError, ConfigError
from experiments.records import RoundRecord
from experiments.specs import TrialSpec
from models import build_model
from models.augment import Normalizer
from models.evaluation import evaluate
from models.networks import Networks
from models.training import train_round
from orchestrator.gpu import GpuMeter, set_deterministic
from orchestrator.provenance import device_name, git_sha
from orchestrator.records import TrialState
from orchestrator.streams import generator, seeded_global_rng, stream_key
from strategies import Strategy, build_strategy
from strategies.base import SCORE_BATCH_SIZE, ScoringInputs, ShardResult, merge_shards
from strategies.scoring_heap import run_scoring


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
    map_shards: ShardMapper | None = None  # None: every shard in this process; Ray sends them to actors
    score_batch_size: int = SCORE_BATCH_SIZE  # a mechanic: bounds scoring's peak memory, never changes a pick
    hardware: str = ""  # the device's name, recorded with every round

    @classmethod
    def create(cls, spec: TrialSpec, dataset: Dataset, device: str | torch.device, **options) -> TrialContext:
        check_budget_fits(spec, dataset)
        return cls(
            spec,
            build_strategy(spec.strategy),
            dataset,
            dataset.train_images.to(device),
            dataset.train_labels.to(device),
            dataset.test_images.to(device),
            dataset.test_labels.to(device),
            Normalizer(dataset.mean, dataset.std),
            **options,
            hardware=device_name(device),
        )

    def scoring_inputs(self, nets: Networks, pool_indices: np.ndarray, round_index: int) -> ScoringInputs:
        augmented = self.spec.scoring.score_augmented and self.spec.train.augment
        return ScoringInputs(
            nets.backbone,
            self.images[torch.as_tensor(pool_indices)],
            pool_indices,
            self.normalize,
            self.score_batch_size,
            stream_key(self.spec.seed, round_index, "select"),
            self.spec.train.crop_padding if augmented else None,
            nets.auxiliary,
        )


def check_budget_fits(spec: TrialSpec, dataset: Dataset) -> None:
    """A budget larger than the pool cannot be reached: refuse before any training."""
    if spec.regime.budget > dataset.n_train:
        raise ConfigError(
            f"regime '{spec.regime_name}': budget {spec.regime.budget} exceeds the train pool of '{dataset.name}' "
            f"({dataset.n_train} images); lower the budget to at most {dataset.n_train}"
        )


def build_networks(spec: TrialSpec, dataset: Dataset, strategy: Strategy, device: str | torch.device) -> Networks:
    """Initial weights from the seed's streams: every strategy of a seed starts from the same backbone, and each
    network the strategy trains beside it from a stream of its own ('init_<name>')."""
    with seeded_global_rng(spec.seed, 0, "init"):
        backbone = build_model(spec.model, dataset.n_classes, dataset.image_shape[0])
    auxiliary = {}
    for name, build in strategy.auxiliary_networks.items():
        with seeded_global_rng(spec.seed, 0, f"init_{name}"):
            auxiliary[name] = build(backbone, dataset.image_shape).to(device)
    return Networks(backbone.to(device), auxiliary)


def initial_state(spec: TrialSpec, dataset: Dataset) -> TrialState:
    """A random initial labeled set from the seed's 'initial' stream (the same for every strategy)."""
    labeled_round = torch.full((dataset.n_train,), -1, dtype=torch.int64)
    labeled_round[
        torch.randperm(dataset.n_train, generator=generator(spec.seed, 0, "initial"))[: spec.regime.initial]
    ] = 0
    return TrialState(spec.trial_id, labeled_round, weights={})


def run_round(ctx: TrialContext, nets: Networks, state: TrialState, r: int) -> RoundRecord:
    """Train -> test -> subset -> query -> label, measuring what the round used of its GPU. Mutates nets and
    state.labeled_round."""
    with GpuMeter(ctx.images.device) as meter:
        record = _round(ctx, nets, state, r)
    use = meter.result
    return replace(
        record,
        gpu_peak_allocated_mib=use.peak_allocated_mib,
        gpu_peak_reserved_mib=use.peak_reserved_mib,
        gpu_utilization=use.utilization,
    )


def _round(ctx: TrialContext, nets: Networks, state: TrialState, r: int) -> RoundRecord:
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
    on_labeled = torch.as_tensor(np.sort(labeled), device=ctx.images.device)  # test-time views, eval mode
    fit = evaluate(nets.backbone, ctx.images[on_labeled], ctx.labels[on_labeled], ctx.normalize, ctx.dataset.n_classes)
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
            ctx.map_shards or map_shards_locally,
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
        git_sha=git_sha(),
        device=ctx.hardware,
        train_accuracy=fit.accuracy,
    )


def trial_threads(cpus_per_trial: float) -> int:
    """Torch's CPU thread count for a trial. It changes the order of floating-point sums, so every runner sets
    it from the grid's cpus_per_trial: on CPU, a trial gives bit-identical records wherever it runs."""
    return max(1, int(cpus_per_trial))


def run_trial(
    spec: TrialSpec,
    dataset: Dataset,
    *,
    device: str | torch.device = "cpu",
    state: TrialState | None = None,
    on_round: Callable[[TrialState], None] | None = None,
    max_rounds: int | None = None,
    n_shards: int = 1,
    map_shards: ShardMapper | None = None,
    score_batch_size: int = SCORE_BATCH_SIZE,
) -> TrialState:
    """Runs the trial's remaining rounds (from `state` if given); calls on_round(state) after each one."""
    set_deterministic(spec.train.deterministic)
    ctx = TrialContext.create(
        spec, dataset, device, n_shards=n_shards, map_shards=map_shards, score_batch_size=score_batch_size
    )
    nets = build_networks(spec, dataset, ctx.strategy, device)
    if state is None:
        state = initial_state(spec, dataset)
    else:
        try:
            nets.load(state.weights)
        except (KeyError, RuntimeError) as error:
            raise CheckpointError(
                f"the checkpoint of trial {spec.trial_id} does not fit its networks ({error}); "
                "delete the checkpoint to rerun the trial from its first round"
            ) from None
    n_rounds = (
        len(spec.regime.labeled_counts) if max_rounds is None else min(max_rounds, len(spec.regime.labeled_counts))
    )
    for r in range(state.rounds_done, n_rounds):
        if spec.train.reinit_each_round and r > 0:
            nets = build_networks(spec, dataset, ctx.strategy, device)
        state.records.append(run_round(ctx, nets, state, r))
        state.weights = nets.weights()
        if on_round is not None:
            on_round(state)
    return state


# -- the query of a round: draw the random subset, map the strategy over shards, merge, select b pool indices

ShardMapper = Callable[[Strategy, list[ScoringInputs], int], list[ShardResult]]


def map_shards_locally(strategy: Strategy, shards: list[ScoringInputs], b: int) -> list[ShardResult]:
    """The in-process mapper; the orchestrator substitutes one that sends shards to actors."""
    return [run_scoring(lambda shard=shard: strategy.reduce(strategy.score(shard), b)) for shard in shards]


def draw_subset(labeled_round: torch.Tensor, size: int | None, generator: torch.Generator) -> np.ndarray:
    """A uniformly random subset of the unlabeled pool (sorted pool indices); None or oversize = all of it."""
    order = torch.randperm(len(labeled_round), generator=generator)
    unlabeled = order[labeled_round[order] < 0].numpy()
    return np.sort(unlabeled if size is None else unlabeled[:size])


def query(
    strategy: Strategy,
    make_inputs: Callable[[np.ndarray], ScoringInputs],
    subset: np.ndarray,
    labeled: np.ndarray,
    b: int,
    n_shards: int = 1,
    map_shards: ShardMapper = map_shards_locally,
) -> np.ndarray:
    """Exactly b unique unlabeled pool indices; the same for any n_shards."""
    candidates = np.sort(strategy.candidates(subset, labeled))
    shards = [make_inputs(part) for part in np.array_split(candidates, n_shards) if len(part)]
    key = shards[0].selection_key if shards else 0
    strategy = strategy.prepare(make_inputs, candidates, key)  # once, in this process: every shard sees the same
    picks = strategy.select(merge_shards(map_shards(strategy, shards, b)), b, labeled, key)
    if (
        len(picks) != b
        or len(np.unique(picks)) != b
        or np.isin(picks, labeled).any()
        or not np.isin(picks, subset).all()
    ):
        raise RuntimeError(
            f"strategy {strategy.name} returned an invalid selection (want {b} unique unlabeled subset indices)"
        )
    return np.asarray(picks, dtype=np.int64)
