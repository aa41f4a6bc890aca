"""Grid files: the documented example works as written, bad input gets errors that name field, value and fix."""

from __future__ import annotations

import textwrap

import pytest

from experiments.errors import ConfigError
from orchestrator.plan.grid import load_grid, parse_grid

EXAMPLE = """
name: digits-demo
datasets: [digits]
model: small_cnn               # optional; else each dataset's default
data_root: ~/data              # optional; else $ALBENCH_DATA_ROOT, else the default
regimes:
  small: {initial: 20, query: 20, subset: 400, budget: 200}
strategies: [random, entropy, margin, least_confidence, coreset, learning_loss, ent_gradnorm, lplgrad]
seeds: [0, 1, 2]
train: {epochs: 30}            # overrides of the dataset's defaults
resources: {gpus_per_trial: 0, cpus_per_trial: 1, scoring_shards: 1}
"""


def write(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_documented_example_expands_to_every_combination(tmp_path):
    grid = load_grid(write(tmp_path, EXAMPLE))
    trials = grid.trials()
    assert len(trials) == 1 * 1 * 8 * 3
    assert len({t.trial_id for t in trials}) == 24
    assert {t.train.epochs for t in trials} == {30} and trials[0].regime.labeled_counts[-1] == 200


def test_overriding_epochs_rescales_the_schedule_unless_given(tmp_path):
    grid = parse_grid({**_base(), "datasets": ["cifar10"], "strategies": ["lplgrad"], "train": {"epochs": 50}})
    (trial,) = grid.trials()
    assert trial.train.epochs == 50 and trial.train.lr_milestones == (40,)
    assert trial.strategy.settings == {"detach_epoch": 29}, "30 of 50 epochs stay attached, as 121 of 200"
    explicit = parse_grid({**_base(), "datasets": ["cifar10"], "train": {"epochs": 50, "lr_milestones": [45]}})
    assert explicit.trials()[0].train.lr_milestones == (45,)


def _base(**changes):
    base = {
        "name": "g",
        "datasets": ["digits"],
        "regimes": {"r": {"initial": 10, "query": 10, "budget": 50}},
        "strategies": ["random", "entropy"],
        "seeds": [0],
    }
    return {**base, **changes}


def test_trial_ids_are_stable_and_only_new_trials_appear_when_seeds_are_added():
    before = {t.trial_id for t in parse_grid(_base()).trials()}
    again = {t.trial_id for t in parse_grid(_base()).trials()}
    more = {t.trial_id for t in parse_grid(_base(seeds=[0, 1])).trials()}
    changed = {t.trial_id for t in parse_grid(_base(train={"epochs": 5})).trials()}
    assert before == again and before < more and len(more) == 4
    assert not (before & changed)


def test_unknown_strategy_names_the_field_value_and_known_set():
    with pytest.raises(ConfigError) as error:
        parse_grid(_base(strategies=["random", "lplgard"]), "my.yaml")
    message = str(error.value)
    assert "my.yaml" in message and "strategies" in message and "'lplgard' is unknown" in message
    assert "known: badge, bait, coreset, ent_gradnorm" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seeds": [0, 0]}, "seed listed more than once: 0"),
        ({"regimes": {"r": {"initial": 10, "query": 10, "budget": 5}}}, "budget (5) must be >= initial (10)"),
        ({"regimes": {"r": {"initial": 10, "query": 0, "budget": 50}}}, "regimes.r.query"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown field; allowed: epochs, batch_size"),
        ({"train": {"epochs": "ten"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"lr_milestones": [10, "x"]}}, "train.lr_milestones.1: Input should be a valid integer"),
        ({"train": {"precision": "fp16"}}, "train.precision: Input should be 'fp32' or 'bf16'"),
        (
            {"resources": {"score_batch_size": 0}},
            "resources.score_batch_size: Input should be a positive number of images or 'auto' (got 0)",
        ),
        (
            {"resources": {"gpus_per_trial": 1.5}},
            "resources.gpus_per_trial: 1.5 GPUs per trial cannot be scheduled: a trial takes a share of one GPU "
            "(0 < g <= 1, e.g. 0.5 packs 2 trials per GPU, 0.25 packs 4) or a whole number of GPUs (2, 3, ...). "
            "Use 1 or 2",
        ),
        ({"resources": {"gpus_per_trial": -0.5}}, "resources.gpus_per_trial: Input should be greater than or equal"),
        ({"resources": {"fuse": 0}}, "resources.fuse: Input should be greater than 0"),
        (
            {"resources": {"fuse": 4, "scoring_shards": 2}},
            "fuse: 4 with scoring_shards: 2 is not supported: a fused group scores in its own actor. Set fuse: 1 "
            "to shard scoring, or scoring_shards: 1 to fuse",
        ),
        ({"train": {"deterministic": "maybe"}}, "train.deterministic: Input should be a valid boolean"),
        ({"train": {"lr": -1}}, "greater than 0"),
        ({"datasets": ["cifar11"]}, "dataset 'cifar11' is unknown"),
        ({"model": "vgg"}, "model 'vgg' is unknown; known: resnet18, small_cnn"),
        ({"colour": "red"}, "colour: unknown field; allowed: name, datasets"),
        ({"strategies": []}, "strategies: List should have at least 1 item"),
    ],
)
def test_malformed_grids_are_rejected_with_the_problem_named(changes, expected):
    with pytest.raises(ConfigError) as error:
        parse_grid(_base(**changes))
    assert expected in str(error.value)


@pytest.mark.parametrize("gpus", [0, 0.25, 0.5, 1, 2, 4.0])
def test_a_share_of_one_gpu_or_whole_gpus_per_trial_are_accepted(gpus):
    assert parse_grid(_base(resources={"gpus_per_trial": gpus})).resources.gpus_per_trial == gpus


def test_missing_fields_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="seeds: required field is missing"):
        parse_grid({k: v for k, v in _base().items() if k != "seeds"})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_grid(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_grid(write(tmp_path, "- just\n- a list\n"))


def test_shipped_grids_validate():
    from tests.conftest import REPO

    for path in sorted((REPO / "experiments" / "grids").rglob("*.yaml")):
        assert load_grid(path).trials(), path


@pytest.mark.parametrize(
    ("dataset", "high_rounds", "low_rounds"),
    # Table II: rounds = (B - b) / b + 1, e.g. CIFAR-10 high 1k..10k = 10, CIFAR-100 high 2.5k..20k = 8
    [("cifar10", 10, 10), ("cifar100", 8, 8), ("svhn", 10, 10), ("caltech101", 7, 7), ("cdd", 5, 5)],
)
def test_the_paper_grids_expand_to_every_strategy_seed_and_regime(dataset, high_rounds, low_rounds):
    from strategies import STRATEGY_NAMES
    from tests.conftest import REPO

    grid = load_grid(REPO / "experiments" / "grids" / "paper" / f"{dataset}.yaml")
    trials = grid.trials()
    expected_strategies = set(STRATEGY_NAMES) - ({"bait"} if dataset in ("cifar100", "caltech101") else set())
    assert {t.strategy.name for t in trials} == expected_strategies, "every registered strategy (bait where it fits)"
    assert len(trials) == 2 * len(expected_strategies) * 5
    rounds = {t.regime_name: len(t.regime.labeled_counts) for t in trials}
    assert rounds == {"high": high_rounds, "low": low_rounds}
    assert {t.model for t in trials} == {"resnet18"} and {t.seed for t in trials} == {0, 1, 2, 3, 4}
    assert all(t.regime.initial == t.regime.query for t in trials)  # the paper starts from b labeled images


PAPER_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "caltech101": 101, "cdd": 6}


@pytest.mark.parametrize("dataset", sorted(PAPER_CLASSES))
def test_the_paper_grids_fisher_selections_fit_one_80_gib_gpu(dataset):
    """bait and fishermask hold the round's pool as [N, C, K] float64: every shipped trial must fit an H100."""
    from strategies.fisher_greedy import greedy_bytes
    from strategies.fishermask import DEFAULT_EXTRA_ENTRIES
    from tests.conftest import REPO

    c, d = PAPER_CLASSES[dataset], 512  # ResNet-18's embedding
    for t in load_grid(REPO / "experiments" / "grids" / "paper" / f"{dataset}.yaml").trials():
        if t.strategy.name == "bait":
            k = c * d
        elif t.strategy.name == "fishermask":
            q = t.strategy.settings
            k = q.get("mask_size") or (c * d if q.get("whole_last_layer", True) else 0) + DEFAULT_EXTRA_ENTRIES
        else:
            continue
        labeled_at_last_query = t.regime.labeled_counts[-2]
        need = greedy_bytes(t.regime.subset + labeled_at_last_query, t.regime.subset, c, k)
        assert need < 80 * 2**30, f"{t.label}: {need / 2**30:.0f} GiB"
