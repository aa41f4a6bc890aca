"""Fused trials on real digits: a fused group equals its trials run alone (loss curves, accuracies, picks), an
interrupted group resumes every member exactly, a failing member leaves and the others go on, and only trials
that train alike are fused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import orchestrator.engine.group
from experiments.errors import ConfigError
from orchestrator.engine.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.engine.group import fused_groups, fusion_key, run_group
from orchestrator.engine.trial import run_trial
from tests.conftest import tiny_spec

AUGMENTED = {"augment": True, "crop_padding": 1}


def _cross_entropy_group():
    return [
        tiny_spec("entropy", 0, **AUGMENTED),
        tiny_spec("margin", 1, **AUGMENTED),
        tiny_spec("random", 2, **AUGMENTED),
    ]


def _lplgrad_group():
    return [tiny_spec("lplgrad", 0, **AUGMENTED), tiny_spec("lplgrad", 1, **AUGMENTED)]


def _deterministic(state):
    return [r.deterministic() for r in state.records]


@pytest.mark.parametrize("make_specs", [_cross_entropy_group, _lplgrad_group], ids=["entropy_margin_random", "lplgrad"])
def test_a_fused_group_equals_its_trials_run_alone(digits, make_specs):
    specs = make_specs()
    alone = {s.trial_id: run_trial(s, digits) for s in specs}
    fused = run_group(specs, digits)
    for spec in specs:
        a, f = alone[spec.trial_id], fused[spec.trial_id]
        assert len(f.records) == len(a.records) == 4
        assert [r.train_loss for r in f.records] == pytest.approx([r.train_loss for r in a.records], rel=1e-2)
        assert [r.test_accuracy for r in f.records] == pytest.approx([r.test_accuracy for r in a.records], abs=0.01)
        assert [r.selected for r in f.records] == [r.selected for r in a.records]  # the picks, round by round
        assert torch.equal(f.labeled_round, a.labeled_round)
        assert [r.fused_with for r in f.records] == [len(specs)] * 4 and all(r.fused_with is None for r in a.records)
        # float32 rounding of a batched kernel, grown over 4 rounds (measured: 4.3 % of a tensor's largest value
        # for lplgrad); the float64 test of models/fused_training.py shows the arithmetic itself is the same
        for name, weights in a.weights.items():
            for key, value in weights.items():
                if value.is_floating_point():
                    scale = float(value.abs().max()) or 1.0
                    assert float((f.weights[name][key] - value).abs().max()) < 0.1 * scale, (name, key)


def test_the_same_group_reproduces_every_record_bit_for_bit(digits):
    specs = _cross_entropy_group()
    first, second = run_group(specs, digits), run_group(specs, digits)
    for spec in specs:
        assert _deterministic(first[spec.trial_id]) == _deterministic(second[spec.trial_id])


def test_a_group_interrupted_mid_round_resumes_every_member_from_its_last_round_exactly(digits, tmp_path, monkeypatch):
    specs = _lplgrad_group() + [tiny_spec("lplgrad", 2, **AUGMENTED)]
    uninterrupted = run_group(specs, digits)

    def checkpoint(states):  # as the runners do: the group's step, every member at one round, then stored
        for state in states:
            save_checkpoint(state, tmp_path / state.trial_id)

    real_query_round, calls = orchestrator.engine.group.query_round, []

    def killed_in_round_2(ctx, nets, state, r, fitted=None):
        calls.append(r)
        if r == 2 and calls.count(2) == 2:  # the second member's query of round 2: the process dies
            raise KeyboardInterrupt
        return real_query_round(ctx, nets, state, r, fitted)

    monkeypatch.setattr(orchestrator.engine.group, "query_round", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_group(specs, digits, on_step=checkpoint)
    monkeypatch.setattr(orchestrator.engine.group, "query_round", real_query_round)
    states = {s.trial_id: load_checkpoint(str(tmp_path / s.trial_id), s.trial_id) for s in specs}
    assert {s.rounds_done for s in states.values()} == {2}  # round 2 of the first member was not stored alone
    resumed = run_group(specs, digits, states=states)
    for spec in specs:
        assert _deterministic(resumed[spec.trial_id]) == _deterministic(uninterrupted[spec.trial_id])
        for name, weights in uninterrupted[spec.trial_id].weights.items():
            assert all(torch.equal(resumed[spec.trial_id].weights[name][k], v) for k, v in weights.items())


def test_a_failing_member_leaves_the_group_with_its_error_and_the_others_go_on(digits):
    specs = _cross_entropy_group()
    after_one = run_group(specs, digits, max_rounds=1)
    broken = specs[1].trial_id
    for value in after_one[broken].weights["backbone"].values():  # a checkpoint whose weights are not numbers
        if value.is_floating_point():
            value.fill_(float("nan"))
    failed = {}
    states = run_group(
        specs, digits, states=after_one, on_failed=lambda trial_id, error: failed.update({trial_id: error})
    )
    assert list(failed) == [broken]
    assert "training diverged" in str(failed[broken]) and "Lower train.lr" in str(failed[broken])
    assert states[broken].rounds_done == 1  # nothing recorded for the round it failed in
    for spec in specs:
        if spec.trial_id != broken:
            records = states[spec.trial_id].records
            assert len(records) == 4 and all(np.isfinite(r.train_loss) for r in records)
            # round 1 was fitted with the failing member still in the stack, later rounds without it
            assert [r.fused_with for r in records[1:]] == [3, 2, 2]


def test_members_at_different_rounds_catch_up_then_go_on_together(digits):
    specs = _cross_entropy_group()[:2]
    ahead = run_trial(specs[0], digits, max_rounds=3)
    behind = run_trial(specs[1], digits, max_rounds=1)
    states = run_group(specs, digits, states={specs[0].trial_id: ahead, specs[1].trial_id: behind})
    assert [r.fused_with for r in states[specs[1].trial_id].records] == [None, None, None, 2]
    assert [r.fused_with for r in states[specs[0].trial_id].records] == [None, None, None, 2]
    assert all(s.rounds_done == 4 for s in states.values())


def test_only_trials_that_train_alike_fuse(digits):
    entropy, lplgrad = tiny_spec("entropy", 0), tiny_spec("lplgrad", 0)
    assert fusion_key(entropy) == fusion_key(tiny_spec("margin", 3))  # another query and seed: fusable
    assert fusion_key(entropy) != fusion_key(lplgrad)  # another objective and networks
    assert fusion_key(entropy) != fusion_key(tiny_spec("entropy", 0, epochs=4))  # another schedule
    with pytest.raises(ConfigError, match="cannot train as one fused group"):
        run_group([entropy, lplgrad], digits)
    specs = [tiny_spec("entropy", s) for s in range(5)] + [lplgrad]
    groups = fused_groups(specs, 2)
    assert [len(g) for g in groups] == [2, 2, 1, 1]
    assert groups[-1] == [lplgrad] and [s for g in groups[:3] for s in g] == specs[:5]
