"""A trial's whole placement group against a real Ray cluster: refused where it can never fit, a warning where the
cluster may grow (and the run starts once it has), a cluster slow to report, and GPUs asked of a cluster without."""

from __future__ import annotations

import threading
import time

import pytest
import ray

import orchestrator.run.placement
from experiments.errors import ConfigError
from orchestrator.plan.grid import parse_grid
from orchestrator.run.ray_runner import run_grid_on_ray
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import read_all
from tests.orchestrator.conftest import _nodes, _remove

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def tiny_grid(name: str, **resources):
    return parse_grid(
        {
            "name": name,
            "datasets": ["digits"],
            "regimes": {"tiny": {"initial": 10, "query": 10, "subset": 100, "budget": 20}},
            "strategies": ["random"],
            "seeds": [0],
            "train": {"epochs": 1},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1, "scoring_shards": 1, **resources},
        }
    )


def run_bounded(grid, results, seconds: float = 240, **options) -> tuple[list[str], object]:
    """The grid on Ray in a thread, so a run that waits forever fails the test instead of hanging it."""
    lines: list[str] = []
    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["entries"] = run_grid_on_ray(grid, Bookkeeper(results, None), report=lines.append, **options)
        except Exception as error:  # handed to the test below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run still waits after {seconds} s; it printed {lines}"
    return lines, outcome.get("error") or outcome["entries"]


def test_a_trial_this_cluster_can_never_hold_is_refused_before_any_trial_starts(node_with_2_cpus, tmp_path):
    lines, error = run_bounded(tiny_grid("too-wide", scoring_shards=4), tmp_path)
    assert isinstance(error, ConfigError), (error, lines)
    assert str(error) == (
        "a trial needs 4 CPUs (scoring_shards 4 × cpus_per_trial 1); this machine has 2: "
        "lower scoring_shards or cpus_per_trial"
    )
    assert {e.status for e in read_all(tmp_path)} == {"pending"} and not (tmp_path / "rounds").exists()


def test_a_cluster_that_may_grow_gets_a_warning_and_the_run_starts_once_a_node_joins(
    ray_head_without_cpus, tmp_path, monkeypatch
):
    monkeypatch.setattr("orchestrator.run.progress.INTERVAL_S", 1.0)  # a progress line a second
    nodes = _nodes(ray_head_without_cpus, {"num_cpus": 1})
    lines: list[str] = []
    outcome: dict[str, object] = {}

    def run():  # the driver in a thread; the cluster grows from this (the main) thread, as Ray's Cluster needs
        grid = tiny_grid("may-grow", scoring_shards=2)
        keeper = Bookkeeper(tmp_path, None)
        outcome["entries"] = run_grid_on_ray(grid, keeper, address=ray_head_without_cpus.address, report=lines.append)

    driver = threading.Thread(target=run, daemon=True)
    try:
        driver.start()
        deadline = time.monotonic() + 120
        while not any("cannot start" in line for line in list(lines)) and time.monotonic() < deadline:
            time.sleep(0.2)
        nodes += _nodes(ray_head_without_cpus, {"num_cpus": 2})
        driver.join(240)
    finally:
        _remove(ray_head_without_cpus, nodes)
    assert not driver.is_alive(), lines
    reason = "a trial needs 2 CPUs (scoring_shards 2 × cpus_per_trial 1); the cluster has 1"
    assert any(line.startswith(f"warning: {reason}") for line in lines), lines
    assert any(line.endswith(f"cannot start: {reason}: lower scoring_shards or cpus_per_trial") for line in lines)
    assert [e.status for e in outcome["entries"]] == ["done"]


def test_a_cluster_slow_to_report_its_nodes_is_waited_for(node_with_2_cpus, tmp_path, monkeypatch):
    """Right after joining, the cluster's resource view can be empty for a moment: the run waits, not refuses."""
    real, start = ray.cluster_resources, time.monotonic()
    monkeypatch.setattr(ray, "cluster_resources", lambda: {} if time.monotonic() - start < 1.5 else real())
    lines, entries = run_bounded(tiny_grid("slow-report"), tmp_path)
    assert [e.status for e in entries] == ["done"], (entries, lines)


def test_a_cluster_that_never_reports_is_named_after_a_bounded_wait(node_with_2_cpus, tmp_path, monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})
    monkeypatch.setattr(orchestrator.run.placement, "REPORT_WAIT_S", 1.0)
    _, error = run_bounded(tiny_grid("no-report"), tmp_path, seconds=60)
    assert isinstance(error, ConfigError)
    assert str(error).startswith("the Ray cluster reported no CPUs within 1 s of joining it")


def test_gpus_asked_of_a_cluster_without_any_are_named_once_and_trials_run_on_cpus(node_with_2_cpus, tmp_path):
    lines, entries = run_bounded(tiny_grid("no-gpu", gpus_per_trial=1), tmp_path)
    note = "the grid asks 1 GPU per trial; the cluster has no GPU: trials run on CPUs"
    assert sum(line.startswith(note) for line in lines) == 1, lines
    assert [e.status for e in entries] == ["done"]
