"""One active-learning trial, in one process, without Ray or MLflow: a pure function of its spec and seed.

Each round is a fit step (`fit_round`: train on the labeled set -> test, and measure the fit on the labeled
set) and a query step (`orchestrator.engine.query`: draw a random unlabeled subset -> map the strategy over shards of
it -> merge -> select b), then labels the picks. Round 0's fit step can come from elsewhere: the one fit of the
trial's round-0 group (`fit_round0`, `orchestrator.engine.round0`). After every round the caller gets the trial's state
(to checkpoint it and write the round's record); a trial started from such a state ends exactly as one that was
never interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from experiments.datasets import Dataset
from experiments.errors import CheckpointError, ConfigError
from experiments.records import RoundRecord
from experiments.specs import TrialSpec
from models import build_model
from models.augment import Normalizer
from models.evaluation import evaluate
from models.networks import Networks, Weights
from models.training import train_round
from orchestrator.engine.gpu import GpuMeter, GpuUse, mps_active, set_deterministic
from orchestrator.engine.provenance import device_name, git_sha
from orchestrator.engine.query import ShardMapper, StrategyOutputError, draw_subset, map_shards_locally, query
from orchestrator.engine.records import Fit, Round0Fit, TrialState
from orchestrator.engine.streams import generator, seeded_global_rng, stream_key
from strategies import Strategy, build_strategy
from strategies.base import SCORE_BATCH_SIZE, ScoringInputs


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
    # a mechanic: bounds scoring's peak memory, never changes a pick; "auto": on a GPU, as large as memory allows
    score_batch_size: int | Literal["auto"] = SCORE_BATCH_SIZE
    hardware: str = ""  # the device's name, recorded with every round

    @classmethod
    def create(cls, spec: TrialSpec, dataset: Dataset, device: str | torch.device, **options) -> TrialContext:
        check_budget_fits(spec, dataset)
        return cls(
            spec,
            build_strategy(spec.strategy, spec.plugins.get("strategy")),
            dataset,
            dataset.train_images.to(device),
            dataset.train_labels.to(device),
            dataset.test_images.to(device),
            dataset.test_labels.to(device),
            Normalizer(dataset.mean, dataset.std),
            **options,
            hardware=device_name(device),
        )

    def sharing(self, spec: TrialSpec, dataset: Dataset) -> TrialContext:
        """Another trial's context on the same device-resident dataset (a fused group uploads it once)."""
        check_budget_fits(spec, dataset)
        return replace(self, spec=spec, strategy=build_strategy(spec.strategy, spec.plugins.get("strategy")))

    def scoring_inputs(self, nets: Networks, pool_indices: np.ndarray, round_index: int) -> ScoringInputs:
        augmented = self.spec.scoring.score_augmented and self.spec.train.augment
        return ScoringInputs(
            nets.backbone,
            self.images[torch.as_tensor(pool_indices)],
            pool_indices,
            self.normalize,
            SCORE_BATCH_SIZE if self.score_batch_size == "auto" else self.score_batch_size,
            stream_key(self.spec.seed, round_index, "select"),
            self.spec.train.crop_padding if augmented else None,
            nets.auxiliary,
            grow_chunks=self.score_batch_size == "auto",
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
        backbone = build_model(spec.model, dataset.n_classes, dataset.image_shape[0], spec.plugins.get("model"))
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


def run_round(ctx: TrialContext, nets: Networks, state: TrialState, r: int, fitted: Fit | None = None) -> RoundRecord:
    """Fit (unless `fitted`: the round's model was trained elsewhere, and `nets` holds it) -> query -> label,
    measuring what the round used of its GPU. Mutates nets and state.labeled_round."""
    with GpuMeter(ctx.images.device) as meter:
        record = query_round(ctx, nets, state, r, fitted)
    return metered(record, meter.result, ctx.images.device)


def metered(record: RoundRecord, use: GpuUse, device: torch.device) -> RoundRecord:
    """The record with what its round (or its fused group's step: the fused fit and every member's query) used
    of the GPU."""
    return replace(
        record,
        gpu_peak_allocated_mib=use.peak_allocated_mib,
        gpu_peak_reserved_mib=use.peak_reserved_mib,
        gpu_utilization=use.utilization,
        mps=mps_active(device),
    )


def labeled_indices(state: TrialState) -> np.ndarray:
    return torch.nonzero(state.labeled_round >= 0).flatten().numpy()


def fit_round(ctx: TrialContext, nets: Networks, labeled: np.ndarray, r: int) -> Fit:
    """The fit step: train on the labeled set with round r's streams, test, and measure the fit on the labeled set."""
    spec = ctx.spec
    start = time.perf_counter()
    # A layer that draws from torch's global RNG while training (a plugin backbone's dropout) draws round r's
    # stream, so that a resumed trial repeats it; albench's own backbones draw nothing from it.
    with seeded_global_rng(spec.seed, r, "train"):
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
    return assess_fit(ctx, nets, labeled, stats.final_loss, time.perf_counter() - start)


def assess_fit(ctx: TrialContext, nets: Networks, labeled: np.ndarray, train_loss: float, train_seconds: float) -> Fit:
    """The fit step's second half, after training (here or fused with other trials'): test, and the fit on the
    labeled set."""
    start = time.perf_counter()
    result = evaluate(nets.backbone, ctx.test_images, ctx.test_labels, ctx.normalize, ctx.dataset.n_classes)
    on_labeled = torch.as_tensor(np.sort(labeled), device=ctx.images.device)  # test-time views, eval mode
    fit = evaluate(nets.backbone, ctx.images[on_labeled], ctx.labels[on_labeled], ctx.normalize, ctx.dataset.n_classes)
    return Fit(
        train_loss,
        result.accuracy,
        result.per_class_accuracy,
        fit.accuracy,
        train_seconds,
        time.perf_counter() - start,
    )


def query_round(ctx: TrialContext, nets: Networks, state: TrialState, r: int, fitted: Fit | None) -> RoundRecord:
    """One round unmetered: its fit step (unless `fitted`), its query, its picks labeled, its record."""
    spec, counts = ctx.spec, ctx.spec.regime.labeled_counts
    labeled = labeled_indices(state)
    fit = fit_round(ctx, nets, labeled, r) if fitted is None else fitted
    start = time.perf_counter()
    picks = np.zeros(0, dtype=np.int64)
    if r + 1 < len(counts):
        subset = draw_subset(state.labeled_round, spec.regime.subset, generator(spec.seed, r, "subset"))
        make_inputs = lambda idx: ctx.scoring_inputs(nets, idx, r)  # noqa: E731
        try:
            picks = query(
                ctx.strategy,
                make_inputs,
                subset,
                labeled,
                counts[r + 1] - counts[r],
                ctx.n_shards,
                ctx.map_shards or map_shards_locally,
            )
        except StrategyOutputError as error:
            raise error.in_round(r) from None
        state.labeled_round[torch.as_tensor(picks)] = r + 1
    return RoundRecord(
        round=r,
        n_labeled=len(labeled),
        test_accuracy=fit.test_accuracy,
        per_class_accuracy=fit.per_class_accuracy,
        train_loss=fit.train_loss,
        selected=tuple(int(i) for i in picks),
        train_seconds=fit.train_seconds,
        eval_seconds=fit.eval_seconds,
        query_seconds=time.perf_counter() - start,
        git_sha=git_sha(),
        device=ctx.hardware,
        train_accuracy=fit.train_accuracy,
    )


def fit_round0(spec: TrialSpec, dataset: Dataset, key: str, device: str | torch.device = "cpu") -> Round0Fit:
    """Round 0's fit step alone, for every trial of its round-0 group (`orchestrator.engine.round0`): the networks any
    member would build, trained on the seed's initial set with round 0's streams, and tested."""
    set_deterministic(spec.train.deterministic)
    ctx = TrialContext.create(spec, dataset, device)
    nets = build_networks(spec, dataset, ctx.strategy, device)
    fit = fit_round(ctx, nets, labeled_indices(initial_state(spec, dataset)), 0)
    return Round0Fit(key, nets.weights(), fit, ctx.hardware)


def load_weights(nets: Networks, weights: Weights, what: str, fix: str) -> None:
    """Loads saved weights into the trial's networks, or says which saved state does not fit and what to delete."""
    try:
        nets.load(weights)
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{what} does not fit its networks ({error}); {fix}") from None


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
    score_batch_size: int | Literal["auto"] = SCORE_BATCH_SIZE,
    round0: Round0Fit | None = None,
) -> TrialState:
    """Runs the trial's remaining rounds (from `state` if given); calls on_round(state) after each one.

    `round0`: its round-0 group's fit (`fit_round0`), which a trial that has not finished round 0 starts from."""
    set_deterministic(spec.train.deterministic)
    ctx = TrialContext.create(
        spec, dataset, device, n_shards=n_shards, map_shards=map_shards, score_batch_size=score_batch_size
    )
    nets = build_networks(spec, dataset, ctx.strategy, device)
    if state is None:
        state = initial_state(spec, dataset)
    else:
        fix = "delete the checkpoint to rerun the trial from its first round"
        load_weights(nets, state.weights, f"the checkpoint of trial {spec.trial_id}", fix)
    n_rounds = (
        len(spec.regime.labeled_counts) if max_rounds is None else min(max_rounds, len(spec.regime.labeled_counts))
    )
    for r in range(state.rounds_done, n_rounds):
        if spec.train.reinit_each_round and r > 0:
            nets = build_networks(spec, dataset, ctx.strategy, device)
        if r == 0 and round0 is not None:  # the group's one round-0 fit: this trial only queries
            fix = "delete that round-0 fit to train it again"
            load_weights(nets, round0.weights, f"the round-0 fit {round0.key}", fix)
            record = replace(run_round(ctx, nets, state, r, round0.fit), round0_group=round0.key)
        else:
            record = run_round(ctx, nets, state, r)
        state.records.append(record)
        state.weights = nets.weights()
        if on_round is not None:
            on_round(state)
    return state
