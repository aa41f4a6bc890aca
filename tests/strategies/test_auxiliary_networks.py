"""A strategy with a head of its own needs its own file and a registry entry, nothing else: this toy one (defined
here, registered for the test) trains, checkpoints, resumes and scores in shards through the unchanged engine."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import strategies
from models.networks import Networks
from models.objective import Objective
from orchestrator.engine.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.engine.trial import TrialContext, build_networks, draw_subset, initial_state, query, run_trial
from strategies.base import ScoringInputs, ShardResult, Strategy
from strategies.forward import map_outputs
from strategies.settings import StrategySettings
from tests.conftest import tiny_spec

HEAD = "doubt_head"


def build_head(backbone: nn.Module, image_shape: tuple[int, int, int]) -> nn.Module:
    with torch.no_grad():
        backbone.eval()
        width = backbone(torch.zeros(1, *image_shape)).embedding.shape[1]
    return nn.Linear(width, 1)


class DoubtSettings(StrategySettings):
    weight: float = 0.5


class DoubtObjective(Objective):
    """CE, plus the head learning to predict each sample's loss from the (detached) embedding."""

    name = "ce+doubt"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def loss(self, nets: Networks, out, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        per_sample = F.cross_entropy(out.logits, labels, reduction="none")
        predicted = nets.auxiliary[HEAD](out.embedding.detach()).squeeze(1)
        return per_sample.mean() + self.weight * F.mse_loss(predicted, per_sample.detach())


class DoubtStrategy(Strategy):
    """Queries the samples whose loss its own head predicts highest."""

    name = "doubt"
    Settings = DoubtSettings
    auxiliary_networks = {HEAD: build_head}

    @property
    def objective(self) -> Objective:
        return DoubtObjective(self.settings.weight)

    def score(self, inputs: ScoringInputs) -> ShardResult:
        head = inputs.networks[HEAD]
        return ShardResult(inputs.pool_indices, scores=map_outputs(inputs, lambda out: head(out.embedding)[:, 0]))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, DoubtStrategy.name, DoubtStrategy)


def test_a_toy_strategy_with_its_own_head_trains_checkpoints_and_resumes_exactly(registered, digits, tmp_path):
    spec = tiny_spec("doubt", settings={"weight": 0.25})
    assert spec.strategy.settings == {"weight": 0.25} and spec.strategy.name == "doubt"
    uninterrupted = run_trial(spec, digits)
    assert set(uninterrupted.weights) == {"backbone", HEAD}
    before = build_networks(spec, digits, DoubtStrategy(), "cpu").auxiliary[HEAD].weight
    assert not torch.equal(uninterrupted.weights[HEAD]["weight"], before), "the head was trained"

    partial = run_trial(spec, digits, max_rounds=2)
    save_checkpoint(partial, tmp_path / "checkpoint")
    resumed = run_trial(spec, digits, state=load_checkpoint(str(tmp_path / "checkpoint"), spec.trial_id))
    assert [r.deterministic() for r in resumed.records] == [r.deterministic() for r in uninterrupted.records]
    assert torch.equal(resumed.weights[HEAD]["weight"], uninterrupted.weights[HEAD]["weight"])


def test_the_toy_strategy_keeps_the_contract_in_shards(registered, digits):
    spec = tiny_spec("doubt")
    ctx = TrialContext.create(spec, digits, "cpu")
    nets = build_networks(spec, digits, ctx.strategy, "cpu")
    state = initial_state(spec, digits)
    labeled = torch.nonzero(state.labeled_round >= 0).flatten().numpy()
    subset = draw_subset(state.labeled_round, 120, torch.Generator().manual_seed(0))
    picks = [
        query(ctx.strategy, lambda idx: ctx.scoring_inputs(nets, idx, 0), subset, labeled, 10, n_shards)
        for n_shards in (1, 3)
    ]
    assert np.array_equal(*picks) and len(np.unique(picks[0])) == 10 and not np.isin(picks[0], labeled).any()
    assert pickle.loads(pickle.dumps(ctx.strategy)).objective == ctx.strategy.objective
