"""The contract every registered strategy keeps: b unique unlabeled picks, reproducible, shard-invariant, picklable."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from experiments.defaults import DEFAULTS, resolve_train
from models.networks import Networks
from models.small_cnn import SmallCNN
from orchestrator.engine.trial import TrialContext, draw_subset, initial_state, query
from strategies import STRATEGY_NAMES, build_strategy
from tests.conftest import tiny_spec

B = 12
NARROW = (8, 16, 16, 32)  # a narrow small CNN: the contract is about picks, not capacity (bait's K = C * 32)
SETTINGS = {"fishermask": {"mask_size": 400, "samples": 128}}  # the last layer's 320 weights + 80 more


def narrow_networks(strategy, digits, seed: int) -> Networks:
    torch.manual_seed(seed)
    backbone = SmallCNN(digits.n_classes, digits.image_shape[0], widths=NARROW)
    aux = {name: build(backbone, digits.image_shape) for name, build in strategy.auxiliary_networks.items()}
    return Networks(backbone, aux)


def _round_inputs(strategy_name, digits, seed=0, score_augmented=False):
    """A trained-for-one-round trial context, as the engine builds it for the query of round 0."""
    spec = tiny_spec(strategy_name, seed, SETTINGS.get(strategy_name))
    if score_augmented:
        spec = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"score_augmented": True})})
    ctx = TrialContext.create(spec, digits, "cpu")
    nets = narrow_networks(ctx.strategy, digits, seed)
    from models.training import train_round
    from orchestrator.engine.streams import generator

    state = initial_state(spec, digits)
    labeled = torch.nonzero(state.labeled_round >= 0).flatten().numpy()
    train_round(
        nets,
        ctx.images,
        ctx.labels,
        labeled,
        resolve_train(DEFAULTS["digits"].train, {"epochs": 2}),
        ctx.strategy.objective,
        ctx.normalize,
        generator(0, 0, "order"),
        generator(0, 0, "augment"),
    )
    subset = draw_subset(state.labeled_round, 150, generator(seed, 0, "subset"))
    return ctx, nets, subset, labeled


def _picks(ctx, nets, subset, labeled, n_shards, round_index=0):
    return query(ctx.strategy, lambda idx: ctx.scoring_inputs(nets, idx, round_index), subset, labeled, B, n_shards)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_contract(name, digits):
    ctx, nets, subset, labeled = _round_inputs(name, digits)
    picks = _picks(ctx, nets, subset, labeled, 1)
    assert len(picks) == B and len(np.unique(picks)) == B
    assert not np.isin(picks, labeled).any() and np.isin(picks, subset).all()
    assert np.array_equal(picks, _picks(ctx, nets, subset, labeled, 1)), "same seed, same picks"
    assert np.array_equal(picks, _picks(ctx, nets, subset, labeled, 4)), "1 shard equals 4 shards"
    strategy = pickle.loads(pickle.dumps(ctx.strategy))
    assert type(strategy) is type(ctx.strategy) and strategy.objective == ctx.strategy.objective
    shard = pickle.loads(pickle.dumps(ctx.scoring_inputs(nets, subset[:20], 0)))
    torch.testing.assert_close(shard.images, ctx.images[torch.as_tensor(subset[:20])])


def test_augmented_scoring_views_are_shard_invariant_too(digits):
    ctx, nets, subset, labeled = _round_inputs("ent_gradnorm", digits, score_augmented=True)
    spec = ctx.spec.model_copy(update={"train": ctx.spec.train.model_copy(update={"augment": True, "crop_padding": 1})})
    ctx.spec = spec
    one, four = _picks(ctx, nets, subset, labeled, 1), _picks(ctx, nets, subset, labeled, 4)
    assert np.array_equal(one, four)
    plain = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"score_augmented": False})})
    ctx.spec = plain
    assert not np.array_equal(one, _picks(ctx, nets, subset, labeled, 1)), "augmented views change the scores"


def test_random_depends_on_the_round_and_seed_and_is_uniform(digits):
    ctx, nets, subset, labeled = _round_inputs("random", digits)
    first = _picks(ctx, nets, subset, labeled, 1, round_index=0)
    assert not np.array_equal(first, _picks(ctx, nets, subset, labeled, 1, round_index=1))
    counts = np.zeros(len(subset))
    position = {int(p): i for i, p in enumerate(subset)}
    for r in range(300):
        for p in _picks(ctx, nets, subset, labeled, 1, round_index=r):
            counts[position[int(p)]] += 1
    expected = 300 * B / len(subset)  # 24 picks per candidate on average
    assert counts.min() > expected * 0.4 and counts.max() < expected * 1.8


def test_uncertainty_strategies_rank_by_their_formula():
    from strategies.base import ShardResult

    logits = torch.log(torch.tensor([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.6, 0.39, 0.01]]))
    from models.augment import Normalizer
    from models.outputs import ModelOutput
    from strategies.base import ScoringInputs

    class Backbone(torch.nn.Module):
        """Returns the given logits for image i, to check each score's direction."""

        def forward(self, x):
            return ModelOutput(logits[x[:, 0, 0, 0].long()], x.flatten(1), [])

    images = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1)
    inputs = ScoringInputs(Backbone(), images, np.arange(3), Normalizer((0.0,), (1 / 255,)), 8, 0)
    ranks = {
        n: build_strategy(n).select(build_strategy(n).score(inputs), 3, np.array([], dtype=np.int64)).tolist()
        for n in ("entropy", "margin", "least_confidence")
    }
    assert ranks["entropy"] == [1, 2, 0]
    assert ranks["least_confidence"] == [1, 2, 0]
    assert ranks["margin"] == [1, 2, 0]
    assert isinstance(build_strategy("entropy").score(inputs), ShardResult)
