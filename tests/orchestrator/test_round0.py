"""Round 0 trained once per group (orchestrator/engine/round0.py): which trials share it, that sharing changes no CPU
record, that a group's round-0 rows are identical even where training is not reproducible (as on a GPU), and that
the fit is reused by later runs, in-process and through Ray."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import orchestrator.engine.trial as trial_module
from experiments.errors import CheckpointError
from experiments.results import read_rounds
from experiments.specs import RegimeSpec
from orchestrator.engine.checkpoint import load_fit, save_fit
from orchestrator.engine.round0 import round0_groups, round0_key
from orchestrator.engine.trial import fit_round0, run_trial
from orchestrator.plan.grid import parse_grid
from orchestrator.run.local import run_grid_locally
from orchestrator.store.bookkeeper import Bookkeeper
from strategies import STRATEGY_NAMES
from tests.conftest import tiny_spec
from tests.orchestrator.readers import records

ROUND0_FIELDS = ["test_accuracy", "train_loss", "train_accuracy", "train_seconds", "eval_seconds", "round0_group"]


def grid_of(name: str, seeds=(0, 1)):
    """Four cross-entropy strategies and lplgrad: per seed, one group of four and lplgrad's group of one."""
    return parse_grid(
        {
            "name": name,
            "datasets": ["digits"],
            "regimes": {"tiny": {"initial": 10, "query": 10, "subset": 100, "budget": 30}},
            "strategies": ["random", "entropy", "margin", "ent_gradnorm", "lplgrad"],
            "seeds": list(seeds),
            "train": {"epochs": 3},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        }
    )


def round0_rows(results) -> pd.DataFrame:
    rows = read_rounds(results)
    return rows[rows["round"] == 0].sort_values(["seed", "strategy"])


def test_the_key_groups_exactly_the_trials_that_compute_the_same_round0():
    base = tiny_spec("random")
    cross_entropy = [tiny_spec(s) for s in ("entropy", "margin", "ent_gradnorm", "badge", "coreset", "bait")]
    assert {round0_key(s) for s in cross_entropy} == {round0_key(base)}
    query_only = base.model_copy(update={"regime": RegimeSpec(initial=10, query=5, subset=50, budget=35)})
    assert round0_key(query_only) == round0_key(base), "the query, subset and budget never enter round 0"
    other = [
        tiny_spec("random", seed=1),
        tiny_spec("random", epochs=4),
        tiny_spec("random", precision="bf16"),
        base.model_copy(update={"regime": RegimeSpec(initial=12, query=10, subset=100, budget=40)}),
        tiny_spec("lplgrad"),
        tiny_spec("learning_loss"),  # the module's LR decays with the backbone's, lplgrad's does not
        tiny_spec("lplgrad", settings={"margin": 0.5}),
    ]
    keys = [round0_key(s) for s in other]
    assert round0_key(base) not in keys and len(set(keys)) == len(keys)
    groups = round0_groups([base, *cross_entropy, *other])
    assert len(groups) == 1 + len(other) and len(groups[round0_key(base)]) == 7


@pytest.mark.parametrize(
    "strategy", [s if s in ("entropy", "lplgrad") else pytest.param(s, marks=pytest.mark.slow) for s in STRATEGY_NAMES]
)
def test_a_trial_started_from_its_groups_fit_computes_bit_for_bit_what_it_computes_alone(digits, strategy):
    spec = tiny_spec(strategy)
    key = round0_key(spec)
    donor = tiny_spec("random") if round0_key(tiny_spec("random")) == key else spec  # another member where it can
    alone = run_trial(spec, digits)
    shared = run_trial(spec, digits, round0=fit_round0(donor, digits, key))
    assert [r.deterministic() for r in shared.records] == [r.deterministic() for r in alone.records]
    assert all(torch.equal(shared.weights[n][k], alone.weights[n][k]) for n in alone.weights for k in alone.weights[n])
    assert [r.round0_group for r in shared.records] == [key, None, None, None]
    assert alone.records[0].round0_group is None


def test_a_fit_reads_back_as_written_and_a_wrong_or_broken_one_is_refused(digits, tmp_path):
    spec = tiny_spec("entropy")
    fit = fit_round0(spec, digits, round0_key(spec))
    save_fit(fit, tmp_path / "fit")
    back = load_fit(str(tmp_path / "fit"), fit.key)
    assert back.fit == fit.fit and back.device == fit.device
    assert all(torch.equal(back.weights["backbone"][k], v) for k, v in fit.weights["backbone"].items())
    with pytest.raises(CheckpointError, match="belongs to group .* not 0000000000000000; remove it"):
        load_fit(str(tmp_path / "fit"), "0000000000000000")
    (tmp_path / "fit" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable .* delete that folder to train the group's round"):
        load_fit(str(tmp_path / "fit"), fit.key)


@pytest.fixture
def irreproducible_training(monkeypatch):
    """Training that never repeats, as on a GPU with its default kernels: each call ends with a random nudge
    of the backbone's weights from the unseeded global generator."""
    real = trial_module.train_round

    def train_round(nets, *args, **kwargs):
        stats = real(nets, *args, **kwargs)
        with torch.no_grad():
            for p in nets.backbone.parameters():
                p.add_(torch.randn(p.shape, generator=noise) * 1e-2)
        return stats

    noise = torch.Generator().manual_seed(torch.seed())
    monkeypatch.setattr(trial_module, "train_round", train_round)


def test_a_groups_round0_rows_are_identical_even_where_training_does_not_repeat(irreproducible_training, tmp_path):
    lines = []
    run_grid_locally(grid_of("paired"), Bookkeeper(tmp_path, None), report=lines.append)
    rows = round0_rows(tmp_path)
    assert sum("trained once" in line for line in lines) == 4, "one fit per group: 2 seeds x (4 CE + lplgrad)"
    for (seed, objective), group in rows.groupby(["seed", rows["strategy"] == "lplgrad"]):
        assert len(group) == (1 if objective else 4)
        assert group[ROUND0_FIELDS].nunique().eq(1).all(), f"seed {seed}: one round-0 model for the group"
        assert group["per_class_accuracy"].map(tuple).nunique() == 1
    groups = rows.groupby("seed")["round0_group"].nunique()
    assert groups.tolist() == [2, 2], "lplgrad's round 0 (trained with its module) is a group of its own"


def test_a_later_run_reuses_the_stored_fit_and_recomputes_nothing(digits, tmp_path):
    grid = grid_of("reuse", seeds=(0,))
    run_grid_locally(grid, Bookkeeper(tmp_path, None), report=lambda line: None)
    before = records(tmp_path)
    entropy = next(t.trial_id for t in grid.trials() if t.strategy.name == "entropy")
    for path in (tmp_path / "trials" / f"{entropy}.json", tmp_path / "rounds" / f"{entropy}.parquet"):
        path.unlink()  # the entropy trial as if never started: the next run starts it at round 0
    lines = []
    run_grid_locally(grid, Bookkeeper(tmp_path, None), report=lines.append)
    assert not any("trained once" in line for line in lines), "its group's stored fit is used"
    assert "4 of 5 trials already complete; 1 to run" in lines and "round 1/3" in "\n".join(lines)
    pd.testing.assert_frame_equal(records(tmp_path), before)


@pytest.mark.ray
@pytest.mark.slow
def test_through_ray_the_groups_fit_first_and_the_rows_match_the_in_process_run(node_with_2_cpus, tmp_path):
    from orchestrator.run.ray_runner import run_grid_on_ray

    grid = grid_of("paired-ray")
    lines = []
    entries = run_grid_on_ray(grid, Bookkeeper(tmp_path / "ray", None), report=lines.append)
    assert {e.status for e in entries} == {"done"}
    assert "0 of 10 trials already complete; 10 to run, after 4 round-0 fits" in lines
    assert sum("trained once" in line for line in lines) == 4
    stored = list((tmp_path / "ray" / "round0").glob("*.json"))
    assert len(stored) == 4 and all("tune" in p.read_text() for p in stored), "fits are Tune checkpoints"
    run_grid_locally(grid, Bookkeeper(tmp_path / "local", None), report=lambda line: None)
    pd.testing.assert_frame_equal(records(tmp_path / "ray"), records(tmp_path / "local"))
    ray_rows, local_rows = round0_rows(tmp_path / "ray"), round0_rows(tmp_path / "local")
    assert ray_rows["round0_group"].tolist() == local_rows["round0_group"].tolist()
    assert ray_rows.groupby("round0_group")[ROUND0_FIELDS[:3]].nunique().eq(1).all().all()
