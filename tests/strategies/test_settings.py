"""Strategies own their settings: typed with defaults, set per strategy from a grid, refused when unknown."""

from __future__ import annotations

import inspect
import typing

import pytest
import yaml

from experiments.errors import ConfigError
from orchestrator.plan.grid import parse_grid
from strategies import STRATEGIES, STRATEGY_NAMES, build_strategy

GRID = """
name: variants
datasets: [digits]
regimes:
  r: {initial: 10, query: 10, subset: 100, budget: 30}
strategies: [entropy, {name: bait, lam: 0.01}, {name: bait, lam: 1.0}]
seeds: [0]
"""


def grid_with(*strategies) -> dict:
    return {**yaml.safe_load(GRID), "strategies": list(strategies)}


def another_value(field) -> object:
    """A valid value of a settings field other than its default."""
    annotation, default = field.annotation, field.default
    if typing.get_origin(annotation) is typing.Literal:
        return next(v for v in typing.get_args(annotation) if v != default)
    kind = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)  # X | None -> X
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if kind is bool:
        return not default
    if kind is int:
        return 7 if default != 7 else 8
    if kind is float:
        return 0.25 if default != 0.25 else 0.5
    raise AssertionError(f"no test value for {annotation}")


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_constructor_argument_of_every_strategy_is_reachable_from_a_grid(name):
    cls = STRATEGIES[name]
    assert list(inspect.signature(cls.__init__).parameters) == ["self", "settings"], "configured by settings alone"
    default = parse_grid(grid_with(name)).trials()[0]
    for setting, field in cls.Settings.model_fields.items():
        value = another_value(field)
        (spec,) = parse_grid(grid_with({"name": name, setting: value})).trials()
        assert getattr(build_strategy(spec.strategy).settings, setting) == value, setting
        assert spec.trial_id != default.trial_id and spec.strategy.label == f"{name}({setting}={_yaml(value)})"


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_two_variants_of_one_strategy_are_distinct_trials_with_distinct_labels():
    trials = parse_grid(yaml.safe_load(GRID)).trials()
    assert [t.strategy.shown for t in trials] == ["entropy", "bait(lam=0.01)", "bait"]  # lam: 1.0 is the default
    assert len({t.trial_id for t in trials}) == 3
    assert [t.label for t in trials][1] == "digits/r/bait(lam=0.01)/seed0"
    assert build_strategy(trials[1].strategy).settings.lam == 0.01


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "bait", "lamda": 0.1},
            "strategy 'bait': unknown setting 'lamda'; bait takes: lam (float > 0, default 1.0)",
        ),
        ({"name": "bait", "lam": "big"}, "setting 'lam': Input should be a valid number"),
        ({"name": "entropy", "lam": 1}, "strategy 'entropy': unknown setting 'lam'; entropy takes: no settings"),
        ({"name": "fishermask", "mask_size": 0}, "setting 'mask_size': Input should be greater than 0"),
        ({"name": "lplgard"}, "strategy 'lplgard' is unknown; known: badge, bait"),
        ({"lam": 0.1}, "strategies.0"),
    ],
)
def test_unknown_or_mistyped_settings_are_refused_with_the_strategy_and_what_it_takes(entry, expected):
    with pytest.raises(ConfigError) as error:
        parse_grid(grid_with(entry))
    assert expected in str(error.value)


def test_grid_wide_settings_reach_every_strategy_that_takes_them_and_entries_win():
    grid = grid_with("ent_gradnorm", "lplgrad", {"name": "exp_gradnorm", "aggregate": "layer_sum"}, "entropy")
    trials = parse_grid({**grid, "query": {"aggregate": "l2"}}).trials()
    settings = {t.strategy.name: t.strategy.settings.get("aggregate") for t in trials}
    assert settings == {"ent_gradnorm": "l2", "lplgrad": "l2", "exp_gradnorm": None, "entropy": None}
    assert [t.strategy.shown for t in trials][:2] == ["ent_gradnorm", "lplgrad"], "grid-wide settings name no variant"
    with pytest.raises(ConfigError, match="query: 'lam' is a setting of none of this grid's strategies"):
        parse_grid({**grid, "query": {"lam": 0.1}})


def test_scoring_mechanics_are_resources_and_not_part_of_the_id():
    plain = parse_grid(grid_with("ent_gradnorm")).trials()[0]
    small_chunks = parse_grid({**grid_with("ent_gradnorm"), "resources": {"score_batch_size": 16}})
    assert small_chunks.resources.score_batch_size == 16 and small_chunks.trials()[0].trial_id == plain.trial_id
    older = parse_grid({**grid_with("ent_gradnorm"), "query": {"score_batch_size": 16}})  # where 17506af had it
    assert older.resources.score_batch_size == 16 and older.trials()[0].trial_id == plain.trial_id


def test_grid_files_of_albench_17506af_still_run_as_the_same_trials():
    old = {
        **grid_with("lplgrad", "fishermask", "bait", "exp_gradnorm"),
        "train": {"epochs": 6, "lpl_weight": 0.5},
        "query": {"gradnorm_aggregate": "l2", "fisher_mask_size": 3000, "fisher_lambda": 0.5, "expected_top_k": 2},
    }
    new = {
        **grid_with(
            {"name": "lplgrad", "weight": 0.5, "aggregate": "l2"},
            {"name": "fishermask", "mask_size": 3000, "lam": 0.5},
            "bait",  # fisher_lambda was fishermask's alone
            {"name": "exp_gradnorm", "aggregate": "l2", "top_k": 2},
        ),
        "train": {"epochs": 6},
    }
    assert [t.trial_id for t in parse_grid(old).trials()] == [t.trial_id for t in parse_grid(new).trials()]
