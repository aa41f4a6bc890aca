"""A trial's id: a hash of the canonical form of what it computes, stable across upgrades.

Pinned ids: if one of these changes, existing results folders no longer resume (every trial would rerun).
Only a deliberate change of what an unchanged spec computes may change them, together with SPEC_VERSION.
"""

from __future__ import annotations

import pytest

from experiments.specs import SPEC_VERSION, DatasetSpec, RegimeSpec, ScoringSpec, TrainSpec, canonical_form
from orchestrator.plan.grid import parse_grid
from strategies import STRATEGIES

DIGITS = {
    "name": "pins",
    "datasets": ["digits"],
    "regimes": {"small": {"initial": 20, "query": 20, "subset": 400, "budget": 200}},
    "strategies": ["random", "entropy", "lplgrad", {"name": "bait", "lam": 0.01}],
    "seeds": [0],
    "train": {"epochs": 30},
}
CIFAR10 = {
    "name": "pins",
    "datasets": ["cifar10"],
    "regimes": {"high": {"initial": 1000, "query": 1000, "subset": 25000, "budget": 10000}},
    "strategies": [{"name": "fishermask", "mask_size": 1024, "whole_last_layer": False}, "exp_gradnorm"],
    "seeds": [4],
    "train": {"precision": "bf16"},
}
CDD = {
    "name": "pins",
    "datasets": [{"name": "imagefolder", "path": "cdd"}],
    "regimes": {"low": {"initial": 500, "query": 500, "budget": 2500}},
    "strategies": ["learning_loss"],
    "seeds": [1],
}

PINNED = {
    "digits/small/random/seed0": "0af2c9aad19426f1",
    "digits/small/entropy/seed0": "4de523eefa717ea9",
    "digits/small/lplgrad/seed0": "016bfce3d6bb18a6",
    "digits/small/bait(lam=0.01)/seed0": "9450bb29a7366fcc",
    "cifar10/high/fishermask(mask_size=1024, whole_last_layer=false)/seed4": "343a772381b86d2c",
    "cifar10/high/exp_gradnorm/seed4": "8cda727a3cf60b91",
    "imagefolder/low/learning_loss/seed1": "3156cdcdab86fdf8",
}


def ids(*grids) -> dict[str, str]:
    return {t.label: t.trial_id for grid in grids for t in parse_grid(grid).trials()}


def test_pinned_trial_ids():
    assert SPEC_VERSION == 1
    assert ids(DIGITS, CIFAR10, CDD) == PINNED


def test_the_canonical_form_holds_what_the_trial_computes_with_defaults_left_out():
    (lplgrad,) = [t for t in parse_grid(DIGITS).trials() if t.strategy.name == "lplgrad"]
    assert canonical_form(lplgrad) == {
        "spec_version": 1,
        "dataset": {"name": "digits"},
        "model": "small_cnn",
        "regime": {"initial": 20, "query": 20, "subset": 400, "budget": 200},
        "seed": 0,
        "strategy": {"name": "lplgrad", "detach_epoch": 18},
        "train": {"epochs": 30, "batch_size": 32, "lr": 0.05, "lr_milestones": [24], "augment": False},
    }


def test_names_resources_and_paths_never_enter_the_id():
    renamed = {
        **DIGITS,
        "name": "another-name",
        "regimes": {"renamed": DIGITS["regimes"]["small"]},
        "data_root": "/somewhere/else",
        "resources": {
            "gpus_per_trial": 0.25,
            "cpus_per_trial": 2,
            "scoring_shards": 4,
            "scoring_heap": "bounded",
            "score_batch_size": 32,
        },
    }
    assert sorted(ids(renamed).values()) == sorted(ids(DIGITS).values())


def test_a_new_setting_at_its_default_leaves_every_id_unchanged():
    """What an upgrade that adds a setting does: the default reproduces today's computation, the id stays."""
    (spec,) = [t for t in parse_grid(DIGITS).trials() if t.strategy.name == "entropy"]

    class TrainSpecWithWarmup(TrainSpec):
        warmup_epochs: int = 0

    class RegimeWithStop(RegimeSpec):
        stop_at_accuracy: float | None = None

    upgraded = spec.model_copy(
        update={
            "train": TrainSpecWithWarmup(**spec.train.model_dump()),
            "regime": RegimeWithStop(**spec.regime.model_dump()),
        }
    )
    assert upgraded.trial_id == spec.trial_id == PINNED["digits/small/entropy/seed0"]
    used = upgraded.model_copy(update={"train": TrainSpecWithWarmup(**spec.train.model_dump(), warmup_epochs=3)})
    assert used.trial_id != spec.trial_id, "set to anything else, it is a different trial"


def test_another_strategys_setting_never_changes_an_id():
    more = {**DIGITS, "query": {"aggregate": "l2"}}  # the gradient norms: only lplgrad here takes it
    before, after = ids(DIGITS), ids(more)
    assert {k: v for k, v in after.items() if "lplgrad" not in k} == {
        k: v for k, v in before.items() if "lplgrad" not in k
    }
    assert after["digits/small/lplgrad/seed0"] != before["digits/small/lplgrad/seed0"]


# Every default the canonical form leaves out. Changing one changes what existing ids mean without changing the
# ids: that needs SPEC_VERSION bumped (and a carry-over of older folders), never a silent edit here.
DEFAULTS_SNAPSHOT = {
    "DatasetSpec": {"path": None, "image_size": None, "test_fraction": None, "split_seed": 0},
    "RegimeSpec": {"subset": None},
    "TrainSpec": {
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "lr_milestones": (),
        "lr_gamma": 0.1,
        "augment": True,
        "crop_padding": 4,
        "hflip": True,
        "reinit_each_round": False,
        "precision": "fp32",
        "deterministic": False,  # added after spec_version 1: its default is what trials computed before
        "step": "eager",  # added after spec_version 1: how a GPU executes the step, outside ids (EXECUTION_ONLY)
    },
    "ScoringSpec": {"score_augmented": False},
    "random": {},
    "entropy": {},
    "margin": {},
    "least_confidence": {},
    "coreset": {},
    "badge": {},
    "bait": {"lam": 1.0, "oversample": 2},
    "fishermask": {"mask_size": None, "whole_last_layer": True, "samples": 1024, "lam": 1.0},
    "learning_loss": {"margin": 1.0, "weight": 1.0, "detach_epoch": None},
    "ent_gradnorm": {"aggregate": "layer_sum"},
    "exp_gradnorm": {"aggregate": "layer_sum", "top_k": None},
    "lplgrad": {"aggregate": "layer_sum", "margin": 1.0, "weight": 1.0, "detach_epoch": None},
}


@pytest.mark.parametrize("name", sorted(DEFAULTS_SNAPSHOT))
def test_defaults_left_out_of_ids_are_unchanged(name):
    models = {m.__name__: m for m in (DatasetSpec, RegimeSpec, TrainSpec, ScoringSpec)}
    model = models[name] if name in models else STRATEGIES[name].Settings
    defaults = {k: f.default for k, f in model.model_fields.items() if not f.is_required()}
    assert defaults == DEFAULTS_SNAPSHOT[name], (
        f"{name}: a changed default needs SPEC_VERSION bumped; a new setting needs a default that computes what "
        "trials computed without it, added here"
    )
