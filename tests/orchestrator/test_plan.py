"""The plan of jobs: built once from the grid and the caught-up ledger (fits, lone trials, fused groups, what each
waits on, longest first, each after its fits), and released by the Ray backend without a barrier: a round-0 group
whose fit is fast starts its trials while a slow group's fit still trains."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from orchestrator.engine.checkpoint import read_records
from orchestrator.engine.round0 import round0_key
from orchestrator.plan.describe import fresh_plan
from orchestrator.plan.grid import parse_grid
from orchestrator.plan.jobs import build_plan
from orchestrator.run.local import run_grid_locally
from orchestrator.store.bookkeeper import Bookkeeper, Planned
from orchestrator.store.ledger import TrialEntry
from tests.orchestrator.readers import records

GRID = {
    "name": "plan",
    "datasets": ["digits"],
    "model": "small_cnn",
    "regimes": {"r": {"initial": 20, "query": 30, "subset": 100, "budget": 80}},
    "strategies": ["random", "entropy", "lplgrad"],
    "seeds": [0, 1],
    "train": {"epochs": 5},
}


def _planned(grid, rounds_done: dict[str, int] | None = None) -> list[Planned]:
    out = []
    for spec in grid.trials():
        entry = TrialEntry(spec.trial_id, spec.label, spec.experiment, len(spec.regime.labeled_counts))
        entry.rounds_done = (rounds_done or {}).get(spec.strategy.name, 0)
        out.append(Planned(spec, entry))
    return out


def test_a_fresh_plan_fits_each_round0_group_first_then_its_trials_longest_first():
    grid = parse_grid(GRID)
    plan = fresh_plan(grid)
    assert len(plan.fits) == 4 and len(plan.trials) == 6  # per seed: {random, entropy} and {lplgrad}
    order = [job.id for job in plan.jobs]
    for job in plan.trials:
        (fit,) = job.waits_on
        assert fit == f"fit-{round0_key(job.members[0].spec)}" and order.index(fit) < order.index(job.id)
    works = [job.work for job in plan.trials]
    assert works == sorted(works, reverse=True), "trials longest first"
    assert [job.priority for job in plan.jobs] == sorted((job.priority for job in plan.jobs), reverse=True)
    fits = {job.id: job for job in plan.fits}
    for job in plan.trials:
        assert job.members[0] in fits[job.waits_on[0]].members
    assert {len(job.members) for job in plan.fits} == {1, 2}


def test_a_caught_up_ledger_plans_only_what_is_left():
    grid = parse_grid(GRID)
    planned = _planned(grid, {"random": 3, "entropy": 1})  # random complete; entropy past round 0
    entropy_key = round0_key(next(p.spec for p in planned if p.spec.strategy.name == "entropy"))
    plan = build_plan(planned, grid, filed=lambda key: key == entropy_key)
    assert {p.spec.strategy.name for p in plan.complete} == {"random"}
    assert {m.spec.strategy.name for job in plan.trials for m in job.members} == {"entropy", "lplgrad"}
    assert len(plan.fits) == 2, "only lplgrad's groups still need a fit"
    for job in plan.trials:
        assert job.resume_points() == {m.spec.trial_id: m.entry.rounds_done for m in job.members}
        assert (job.waits_on == ()) == (job.members[0].spec.strategy.name == "entropy")


def test_a_fused_group_waits_on_the_fit_of_each_of_its_members():
    grid = parse_grid(GRID | {"resources": {"fuse": 4}})
    plan = fresh_plan(grid)
    fused = [job for job in plan.trials if len(job.members) > 1]
    cross_entropy = next(job for job in fused if job.members[0].spec.strategy.name != "lplgrad")
    assert len(cross_entropy.members) == 4 and len(cross_entropy.waits_on) == 2  # two seeds, two fits
    assert cross_entropy.id.startswith("fused-")


# -- released without a barrier, on Ray

FAST_AND_SLOW = {
    "name": "release",
    "datasets": ["digits"],
    "model": "small_cnn",
    # round 0 trains on 20 images in one group and on 1,000 in the other (50-fold)
    "regimes": {
        "fast": {"initial": 20, "query": 20, "budget": 60},
        "slow": {"initial": 1000, "query": 20, "budget": 1020},
    },
    "strategies": ["random", "entropy"],
    "seeds": [0],
    "train": {"epochs": 15},
    "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
}


@pytest.mark.slow
@pytest.mark.ray
def test_a_fast_groups_trials_start_while_a_slow_groups_fit_still_trains(node_with_2_cpus, tmp_path):
    from orchestrator.run.ray_runner import run_grid_on_ray

    grid = parse_grid(FAST_AND_SLOW)
    keeper = Bookkeeper(tmp_path / "ray", None)
    entries = run_grid_on_ray(grid, keeper, report=lambda line: None)
    assert {e.status for e in entries} == {"done"}
    slow_key = round0_key(next(t for t in grid.trials() if t.regime_name == "slow"))
    slow_fit_filed = (tmp_path / "ray" / "round0" / f"{slow_key}.json").stat().st_mtime
    started = {}
    for entry in entries:
        _, extra = read_records(keeper.checkpoint_of(entry), entry.trial_id)
        started[entry.label] = float(extra["started_at"])
    fast = [label for label in started if "/fast/" in label]
    early = [label for label in fast if started[label] < slow_fit_filed]
    print(json.dumps({"slow fit filed": slow_fit_filed, "trials started": started}, indent=1))
    assert early, f"a fast trial starts before the slow group's fit is filed ({slow_fit_filed}): {started}"
    run_grid_locally(grid, Bookkeeper(tmp_path / "local", None), report=lambda line: None)
    pd.testing.assert_frame_equal(records(tmp_path / "ray"), records(tmp_path / "local"))


def test_a_failing_round0_fit_fails_its_trials_alone_and_the_other_groups_finish(tmp_path, monkeypatch):
    """In-process (a worker's code cannot be patched from here): the seed-1 fit diverges; its trials fail with its
    error, before any of them runs, and seed 0's group and the trials of its own fits finish."""
    import orchestrator.engine.execute
    from experiments.errors import DivergedError

    grid = parse_grid(GRID | {"strategies": ["random", "entropy"], "train": {"epochs": 1}})
    bad = round0_key(next(t for t in grid.trials() if t.seed == 1))
    real = orchestrator.engine.execute.fit_round0

    def diverges_for_seed_1(spec, dataset, key, device):
        if key == bad:
            raise DivergedError("training diverged (loss nan) in round 0")
        return real(spec, dataset, key, device)

    monkeypatch.setattr(orchestrator.engine.execute, "fit_round0", diverges_for_seed_1)
    lines: list[str] = []
    entries = run_grid_locally(grid, Bookkeeper(tmp_path, None), report=lines.append)
    by_seed = {seed: [e for e in entries if e.label.endswith(f"seed{seed}")] for seed in (0, 1)}
    assert {e.status for e in by_seed[0]} == {"done"}
    assert {e.status for e in by_seed[1]} == {"failed"} and all(e.rounds_done == 0 for e in by_seed[1])
    assert all(e.error == f"round 0 of its group {bad}: DivergedError: training diverged (loss nan) in round 0"
               for e in by_seed[1])  # fmt: skip
    assert not any("seed1: running" in line for line in lines), "no trial of the failed fit starts"
