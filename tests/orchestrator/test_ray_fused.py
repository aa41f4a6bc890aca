"""Fused trials (`resources.fuse`) on a real Ray cluster: one actor per group, every member filed under its own id
(ledger, Parquet rows, MLflow run); a group interrupted mid-round resumes every member from its last round; a
failing member leaves its group and the others finish."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import orchestrator.engine.group
from experiments.results import read_rounds
from orchestrator.engine.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import read_all
from tests.orchestrator.readers import mlflow_runs, records
from tests.orchestrator.test_ray import grid_of, in_process, ledger_checkpoints, on_ray, one_checkpoint_per_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STRATEGIES = ("random", "entropy", "lplgrad")  # two cross-entropy strategies fuse per seed; lplgrad with lplgrad


def _fused_grid(name: str, strategies=STRATEGIES):
    return grid_of(name, strategies=strategies, seeds=(0, 1), fuse=2)


# two groups of equal work, (random, entropy) of seed 0 then of seed 1: the plan runs them in grid order, after
# both seeds' round-0 fits
CROSS_ENTROPY = ("random", "entropy")


def _interrupted_in_process(grid, results, monkeypatch, at_call: int) -> None:
    """Runs the grid in this process and kills it in a member's query (the `at_call`-th round of any member)."""
    real, calls = orchestrator.engine.group.query_round, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(orchestrator.engine.group, "query_round", dies)
    with pytest.raises(KeyboardInterrupt):
        in_process(grid, results)
    monkeypatch.setattr(orchestrator.engine.group, "query_round", real)


def test_a_fused_grid_on_ray_equals_the_fused_in_process_run_and_files_every_member(node_with_2_cpus, tmp_path):
    grid = _fused_grid("fused-basic")
    entries = on_ray(grid, tmp_path / "ray")
    in_process(grid, tmp_path / "local")
    assert len(entries) == 6 and {e.status for e in entries} == {"done"}
    rows = read_rounds(tmp_path / "ray")
    assert len(rows) == 30 and not rows.duplicated(["trial_id", "round"]).any()
    assert set(rows.loc[rows["round"] > 0, "fused_with"]) == {2}  # round 0: each seed's round-0 fit
    assert rows.loc[rows["round"] == 0, "fused_with"].isna().all() and rows["mps"].isna().all()  # a CPU: no MPS
    pd.testing.assert_frame_equal(records(tmp_path / "ray"), records(tmp_path / "local"))  # bit for bit, same groups
    points = mlflow_runs(tmp_path / "ray", grid.name)
    assert len(points) == 6 and all(p == ("FINISHED", [10, 20, 30, 40, 50]) for p in points.values())
    members = ledger_checkpoints(tmp_path / "ray")  # RUN/checkpoint_N/<member id>: one group checkpoint each
    assert all(m.is_dir() for m in members) and one_checkpoint_per_job(tmp_path / "ray")


def test_an_interrupted_fused_group_resumes_every_member_from_its_last_round(node_with_2_cpus, tmp_path, monkeypatch):
    grid = _fused_grid("fused-resume", CROSS_ENTROPY)
    in_process(grid, tmp_path / "uninterrupted")
    # group 1 (random + entropy, seed 0): rounds 0-2 stored for both, killed in the second member's query of round 3
    _interrupted_in_process(grid, tmp_path / "run", monkeypatch, at_call=8)
    stopped = {e.label: e for e in read_all(tmp_path / "run")}
    assert stopped["digits/tiny/random/seed0"].rounds_done == stopped["digits/tiny/entropy/seed0"].rounds_done == 3
    assert {e.status for e in stopped.values()} == {"pending"}
    before = read_rounds(tmp_path / "run").set_index(["trial_id", "round"])["train_seconds"]
    entries = on_ray(grid, tmp_path / "run")
    assert {e.status for e in entries} == {"done"}
    after = read_rounds(tmp_path / "run").set_index(["trial_id", "round"])["train_seconds"]
    assert after.loc[before.index].equals(before)  # the stored rounds were resumed from, not computed again
    pd.testing.assert_frame_equal(records(tmp_path / "run"), records(tmp_path / "uninterrupted"))
    assert not read_rounds(tmp_path / "run").duplicated(["trial_id", "round"]).any()


def test_a_failing_member_leaves_its_fused_group_and_the_others_finish(node_with_2_cpus, tmp_path, monkeypatch):
    grid = _fused_grid("fused-failing", CROSS_ENTROPY)
    _interrupted_in_process(grid, tmp_path, monkeypatch, at_call=8)
    keeper = Bookkeeper(tmp_path, None)
    broken = next(e for e in read_all(tmp_path) if e.label == "digits/tiny/entropy/seed0")
    state = load_checkpoint(keeper.checkpoint_of(broken), broken.trial_id)
    for value in state.weights["backbone"].values():  # weights that are not numbers: the member diverges
        if value.is_floating_point():
            value.fill_(float("nan"))
    save_checkpoint(state, keeper.checkpoint_of(broken))
    entries = {e.label: e for e in on_ray(grid, tmp_path)}
    failed = entries["digits/tiny/entropy/seed0"]
    assert failed.status == "failed" and "training diverged" in failed.error
    assert {e.status for label, e in entries.items() if label != failed.label} == {"done"}
    rows = read_rounds(tmp_path)
    assert sorted(rows.loc[rows["trial_id"] == failed.trial_id, "round"]) == [0, 1, 2]  # its rounds stay
    partner = rows[rows["strategy"].eq("random") & rows["seed"].eq(0)].sort_values("round")
    assert list(partner["fused_with"].fillna(0)) == [0, 2, 2, 2, 0]  # round 3 still fused with it; round 4 alone
    assert torch.isfinite(torch.tensor(partner["train_loss"].to_numpy())).all()
    assert all(m.is_dir() for m in ledger_checkpoints(tmp_path)), "no checkpoint a ledger entry names was removed"
