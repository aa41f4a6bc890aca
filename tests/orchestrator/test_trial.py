"""One trial: a pure function of (spec, seed), paired across strategies, resumable to the same records."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from experiments.errors import ConfigError
from orchestrator.engine.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.engine.trial import run_trial
from tests.conftest import tiny_spec, trial_spec


def _deterministic(state):
    return [r.deterministic() for r in state.records]


def test_records_cover_every_round_and_the_labeled_set_grows_by_the_picks(digits):
    state = run_trial(tiny_spec("entropy"), digits)
    assert [r.n_labeled for r in state.records] == [10, 20, 30, 40]
    assert [len(r.selected) for r in state.records] == [10, 10, 10, 0]
    assert all(0 <= r.test_accuracy <= 1 and len(r.per_class_accuracy) == 10 for r in state.records)
    assert all(r.train_seconds > 0 and r.query_seconds >= 0 for r in state.records)
    history = state.labeled_round
    assert int((history >= 0).sum()) == 40 and int((history == 0).sum()) == 10
    for r in state.records[:-1]:  # the labeling history is one int array: round each image joined
        assert bool((history[list(r.selected)] == r.round + 1).all())


@pytest.mark.parametrize("strategy", ["lplgrad", "coreset"])
def test_same_spec_gives_bit_identical_records(strategy, digits):
    spec = tiny_spec(strategy, augment=True, crop_padding=1)
    a, b = run_trial(spec, digits), run_trial(spec, digits)
    assert _deterministic(a) == _deterministic(b)
    assert a.weights.keys() == b.weights.keys()
    assert all(torch.equal(a.weights[n][k], b.weights[n][k]) for n in a.weights for k in a.weights[n])


def test_each_record_holds_the_models_accuracy_on_its_labeled_set(digits):
    from models import build_model
    from models.augment import Normalizer
    from models.evaluation import evaluate

    state = run_trial(tiny_spec("entropy", epochs=20), digits, max_rounds=1)
    (record,) = state.records
    model = build_model("small_cnn", 10, 1)
    model.load_state_dict(state.weights["backbone"])
    labeled = torch.nonzero(state.labeled_round == 0).flatten()  # round 0's set; its picks joined for round 1
    normalize = Normalizer(digits.mean, digits.std)
    fit = evaluate(model, digits.train_images[labeled], digits.train_labels[labeled], normalize, 10)
    assert record.train_accuracy == fit.accuracy == 1.0, "20 epochs fit 10 images"
    assert record.train_accuracy > record.test_accuracy


def test_strategies_of_a_seed_start_paired_and_seeds_differ(digits):
    entropy, margin = (
        run_trial(tiny_spec("entropy"), digits, max_rounds=1),
        run_trial(tiny_spec("margin"), digits, max_rounds=1),
    )
    assert entropy.records[0].test_accuracy == margin.records[0].test_accuracy  # same init, same initial set
    assert not torch.equal(entropy.labeled_round >= 0, margin.labeled_round >= 0)  # they query differently
    assert torch.equal(entropy.labeled_round == 0, margin.labeled_round == 0)
    other_seed = run_trial(tiny_spec("entropy", seed=1), digits, max_rounds=1)
    assert not torch.equal(entropy.labeled_round == 0, other_seed.labeled_round == 0)


@pytest.mark.parametrize("strategy", ["lplgrad", "random", "coreset"])
def test_a_trial_resumed_from_a_checkpoint_ends_exactly_like_an_uninterrupted_one(strategy, digits, tmp_path):
    spec = tiny_spec(strategy, augment=True, crop_padding=1)
    uninterrupted = run_trial(spec, digits)
    partial = run_trial(spec, digits, max_rounds=2)
    save_checkpoint(partial, tmp_path / "checkpoint")
    resumed = run_trial(spec, digits, state=load_checkpoint(str(tmp_path / "checkpoint"), spec.trial_id))
    assert _deterministic(resumed) == _deterministic(uninterrupted)
    assert torch.equal(resumed.labeled_round, uninterrupted.labeled_round)
    for name, weights in uninterrupted.weights.items():  # the backbone, and lplgrad's loss-prediction module
        assert all(torch.equal(resumed.weights[name][k], v) for k, v in weights.items())


def test_reinitialising_each_round_is_an_option_that_changes_results(digits):
    warm = run_trial(tiny_spec("entropy"), digits)
    cold = run_trial(tiny_spec("entropy", reinit_each_round=True), digits)
    assert warm.records[0].test_accuracy == cold.records[0].test_accuracy
    assert [r.test_accuracy for r in warm.records[1:]] != [r.test_accuracy for r in cold.records[1:]]


def test_a_budget_larger_than_the_pool_is_refused_before_training(digits):
    spec = tiny_spec()
    spec = spec.model_copy(update={"regime": spec.regime.model_copy(update={"budget": 5000})})
    with pytest.raises(ConfigError, match=r"budget 5000 exceeds the train pool of 'digits' \(1438 images\)"):
        run_trial(spec, digits)


def test_a_subset_larger_than_the_unlabeled_pool_scores_all_of_it(digits):
    larger = tiny_spec("entropy")
    larger = larger.model_copy(update={"regime": larger.regime.model_copy(update={"subset": 5000})})
    whole = larger.model_copy(update={"regime": larger.regime.model_copy(update={"subset": None})})
    assert larger.regime.subset > digits.n_train  # 5,000 asked of a 1,438-image pool
    a, b = run_trial(larger, digits, max_rounds=2), run_trial(whole, digits, max_rounds=2)
    assert len(a.records[0].selected) == 10 and np.isfinite(a.records[1].test_accuracy)
    assert [r.selected for r in a.records] == [r.selected for r in b.records], "the oversized subset is the pool"


@pytest.mark.slow
def test_lplgrad_and_random_on_the_real_cifar10_subset(cifar10_subset_root):
    from experiments.datasets import load_dataset
    from experiments.specs import RegimeSpec

    data = load_dataset("cifar10", cifar10_subset_root)
    for strategy in ("lplgrad", "random"):
        regime = RegimeSpec(initial=200, query=100, subset=600, budget=400)
        spec = trial_spec("cifar10", "small_cnn", regime, strategy, 0, epochs=8, batch_size=64)
        state = run_trial(spec, data)
        accuracies = [r.test_accuracy for r in state.records]
        assert len(accuracies) == 3, accuracies
        assert accuracies[-1] > 0.2 and accuracies[-1] > accuracies[0], accuracies  # chance is 0.10


def test_the_deterministic_mode_is_on_during_its_trial_only_and_changes_nothing_on_cpu(digits):
    seen = []

    def flags(state):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic))

    plain = run_trial(tiny_spec("entropy"), digits, on_round=flags)
    strict = run_trial(tiny_spec("entropy", deterministic=True), digits, on_round=flags)
    assert seen == [(False, False)] * 4 + [(True, True)] * 4
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.backends.cudnn.benchmark
    assert _deterministic(strict) == _deterministic(plain), "on a CPU the deterministic mode changes no number"
    run_trial(tiny_spec("random"), digits, max_rounds=1)  # the next trial of a process starts without it
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_cpu_round_records_no_gpu_use(digits):
    (record,) = run_trial(tiny_spec("random"), digits, max_rounds=1).records
    assert (record.gpu_peak_allocated_mib, record.gpu_peak_reserved_mib, record.gpu_utilization) == (None,) * 3
    assert record.device.startswith("cpu: ")
