"""The orchestrator on a real Ray cluster: Tune trials as actors, fake GPUs, two nodes and a lost one,
sharded scoring, MLflow in SQLite and on a real tracking server."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments.results import read_rounds
from orchestrator.engine.checkpoint import read_records
from orchestrator.plan.grid import parse_grid
from orchestrator.run.local import run_grid_locally
from orchestrator.run.ray_runner import run_grid_on_ray
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import read_all
from orchestrator.store.tracking import Tracker, default_tracking_uri
from tests.orchestrator.readers import mlflow_runs, records
from tests.orchestrator.servers import MlflowServer
from tests.orchestrator.test_cli import ENV, GRID, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def grid_of(name, strategies=("random", "lplgrad"), seeds=(0,), epochs=4, **resources):
    return parse_grid(
        {
            "name": name,
            "datasets": ["digits"],
            "regimes": {"tiny": {"initial": 10, "query": 10, "subset": 100, "budget": 50}},
            "strategies": list(strategies),
            "seeds": list(seeds),
            "train": {"epochs": epochs},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1, "scoring_shards": 1, **resources},
        }
    )


def on_ray(grid, results, tracking_uri=None, report=lambda line: None, **options):
    keeper = Bookkeeper(results, Tracker(tracking_uri or default_tracking_uri(results), grid.name, results))
    return run_grid_on_ray(grid, keeper, report=report, **options)


def in_process(grid, results):
    return run_grid_locally(grid, Bookkeeper(results, None), report=lambda line: None, round_progress=False)


def test_a_grid_on_ray_matches_the_in_process_run_and_fills_both_sinks_once(node_with_2_cpus, tmp_path):
    grid = grid_of("ray-basic", seeds=(0, 1))
    entries = on_ray(grid, tmp_path / "ray")
    in_process(grid, tmp_path / "local")
    assert {e.status for e in entries} == {"done"}
    pd.testing.assert_frame_equal(records(tmp_path / "ray"), records(tmp_path / "local"))
    points = mlflow_runs(tmp_path / "ray", grid.name)
    assert len(points) == 4 and all(p == ("FINISHED", [10, 20, 30, 40, 50]) for p in points.values())
    assert one_checkpoint_per_job(tmp_path / "ray"), "one checkpoint per job"

    # adding a seed runs only the new trials; the finished ones keep their rows, runs and points
    more = grid_of("ray-basic", seeds=(0, 1, 2))
    before = read_rounds(tmp_path / "ray")
    on_ray(more, tmp_path / "ray")
    after = read_rounds(tmp_path / "ray")
    assert len(after) == 30 and not after.duplicated(["trial_id", "round"]).any()
    kept = after[after["trial_id"].isin(before["trial_id"])].sort_values(["trial_id", "round"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.sort_values(["trial_id", "round"]).reset_index(drop=True))
    assert len(mlflow_runs(tmp_path / "ray", grid.name)) == 6
    assert one_checkpoint_per_job(tmp_path / "ray")


def tune_checkpoints(results: Path) -> set[Path]:
    """The jobs' Tune checkpoint folders on disk: the trials' and the round-0 fits'."""
    return {p.resolve() for p in (results / "tune").rglob("checkpoint_*") if p.is_dir()}


def ledger_checkpoints(results: Path) -> set[Path]:
    """What the ledger entries point at: each trial's folder inside its job's Tune checkpoint."""
    keeper = Bookkeeper(results, None)
    return {Path(keeper.checkpoint_of(e)).resolve() for e in read_all(results)}


def fit_checkpoints(results: Path) -> set[Path]:
    """The round-0 fits' Tune checkpoints, as their ledger files name them."""
    keeper = Bookkeeper(results, None)
    return {Path(keeper.round0_fit(p.stem)).resolve() for p in (results / "round0").glob("*.json")}


def one_checkpoint_per_job(results: Path) -> bool:
    """Tune's checkpoints on disk are exactly those the ledger names: superseded ones are gone."""
    return tune_checkpoints(results) == {m.parent for m in ledger_checkpoints(results)} | fit_checkpoints(results)


def _placements(results):
    keeper = Bookkeeper(results, None)
    return [read_records(keeper.checkpoint_of(e), e.trial_id)[1] for e in read_all(results)]


def most_at_once(extras: list[dict], gpu: str | None = None) -> int:
    """The most trials (on `gpu`, or on any) that ran at one time, from each one's start and last report."""
    spans = [(float(e["started_at"]), float(e["reported_at"])) for e in extras if gpu in (None, e["gpu_ids"])]
    return max(sum(start <= t < end for start, end in spans) for t, _ in spans)


def test_trials_run_at_once_each_alone_on_its_own_gpu(node_with_4_cpus_4_fake_gpus, tmp_path):
    """A trial starts when its round-0 fit is filed, in the fit's actor or a new one (on a loaded 2-core box a new
    worker takes 5-10 s to start), so when trials overlap depends on those times; what must hold is that trials
    run at once, each seeing only the GPU Ray gave it, never two on one GPU."""
    grid = grid_of("fake-gpus", strategies=("random", "entropy"), seeds=(0, 1), epochs=60, gpus_per_trial=1)
    on_ray(grid, tmp_path)
    extras = _placements(tmp_path)
    assert all(e["cuda_visible_devices"] == e["gpu_ids"] for e in extras)
    assert {e["gpu_ids"] for e in extras} <= {"0", "1", "2", "3"} and len({e["gpu_ids"] for e in extras}) >= 2
    assert most_at_once(extras) >= 2, "trials ran at the same time"
    assert all(most_at_once(extras, gpu) == 1 for gpu in {e["gpu_ids"] for e in extras}), "one trial a GPU"


def test_quarter_gpu_trials_share_a_gpu_four_at_most_each_seeing_only_its_gpu(node_with_8_cpus_2_fake_gpus, tmp_path):
    strategies = ("random", "entropy", "margin", "least_confidence")
    grid = grid_of("quarter-gpus", strategies=strategies, seeds=(0, 1), epochs=60, gpus_per_trial=0.25)
    entries = on_ray(grid, tmp_path)
    assert len(entries) == 8 and {e.status for e in entries} == {"done"}
    extras = _placements(tmp_path)
    assert {e["gpu_ids"] for e in extras} <= {"0", "1"}
    assert all(e["cuda_visible_devices"] == e["gpu_ids"] for e in extras), [e["cuda_visible_devices"] for e in extras]
    assert max(most_at_once(extras, gpu) for gpu in ("0", "1")) >= 2, "quarter-GPU trials shared a GPU at once"
    assert all(most_at_once(extras, gpu) <= 4 for gpu in ("0", "1")), "four quarters a GPU at most"


def test_trials_that_ask_for_no_gpu_see_none_on_a_gpu_node(node_with_8_cpus_2_fake_gpus, tmp_path):
    on_ray(grid_of("cpu-only", strategies=("random", "entropy"), gpus_per_trial=0), tmp_path)
    extras = _placements(tmp_path)
    assert [(e["gpu_ids"], e["cuda_visible_devices"]) for e in extras] == [("", "")] * 2


def test_two_nodes_share_the_trials_and_a_grid_survives_losing_one(
    two_nodes_with_2_cpus_each, ray_head_without_cpus, tmp_path, capfd
):
    grid = grid_of("lost-node", strategies=("random", "ent_gradnorm"), seeds=(0, 1), epochs=25)
    doomed = two_nodes_with_2_cpus_each[1]
    removed = threading.Event()

    def remove_the_node_mid_trial():
        deadline = time.time() + 120
        while time.time() < deadline and not removed.is_set():
            for entry in read_all(tmp_path):
                if entry.nodes and entry.nodes[-1] == doomed.node_id and 0 < entry.rounds_done < entry.n_rounds:
                    ray_head_without_cpus.remove_node(doomed)
                    removed.set()
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=remove_the_node_mid_trial)
    watcher.start()
    lines: list[str] = []
    entries = on_ray(grid, tmp_path, max_failures=3, report=lines.append)
    watcher.join()
    assert removed.is_set(), "a trial ran on the second node and the node was removed mid-trial"
    assert {e.status for e in entries} == {"done"}
    said = [line for line in lines if "retrying from round" in line]
    assert said and all(f"node {doomed.node_id[:12]} (" in line and "was lost" in line for line in said), lines
    assert all("\n" not in line and "Traceback" not in line for line in lines), "one line each, no traceback"
    console = capfd.readouterr()
    assert "(raylet)" not in console.out + console.err and "Traceback" not in console.err, "no Ray dump"
    rows = read_rounds(tmp_path)
    assert len(rows) == 4 * 5 and not rows.duplicated(["trial_id", "round"]).any(), "every row once"
    nodes_used = {node for e in read_all(tmp_path) for node in e.nodes}
    assert len(nodes_used) == 2, "trials spread over both nodes"
    assert any(e.nodes[0] == doomed.node_id and len(e.nodes) > 1 for e in read_all(tmp_path)), "a trial moved"
    in_process(grid, tmp_path / "reference")
    pd.testing.assert_frame_equal(records(tmp_path), records(tmp_path / "reference"))
    assert all(steps == [10, 20, 30, 40, 50] for _, steps in mlflow_runs(tmp_path, grid.name).values())


def test_scoring_in_two_shards_picks_exactly_what_one_shard_picks(node_with_2_cpus, tmp_path):
    strategies = ("lplgrad", "coreset", "margin")
    on_ray(grid_of("shards", strategies=strategies, scoring_shards=1), tmp_path / "one")
    # the bounded scoring heap reaches the shard actors and, being about memory only, changes no pick
    on_ray(grid_of("shards", strategies=strategies, scoring_shards=2, scoring_heap="bounded"), tmp_path / "two")
    pd.testing.assert_frame_equal(records(tmp_path / "two"), records(tmp_path / "one"))


def _peak_rises_in_this_process(root: str) -> dict[str, float]:
    sys.path.insert(0, root)  # the tests package, for the probe
    from tests.strategies.test_scoring_heap import measure_peak_rises

    return measure_peak_rises()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the bounded heap is a glibc (Linux) feature")
def test_the_bounded_scoring_heap_holds_in_a_ray_worker(node_with_2_cpus):
    """Where bounded mode is used: a Ray worker process, with Ray's own threads beside the scoring thread."""
    import ray

    probe = ray.remote(num_cpus=1)(_peak_rises_in_this_process)
    rises = ray.get(probe.remote(str(Path(__file__).resolve().parents[2])))
    two_chunks, many_chunks = rises["two_chunks"], rises["many_chunks"]
    assert two_chunks > 10, f"a chunk of 64 32x32 images should need tens of MiB, measured {two_chunks:.1f}"
    assert many_chunks <= two_chunks + 4, f"24 chunks peaked at {many_chunks:.1f} MiB, 2 chunks at {two_chunks:.1f}"


def test_trials_start_longest_first(node_with_2_cpus, tmp_path):
    grid = grid_of("order", strategies=("random", "exp_gradnorm", "entropy"), epochs=2, cpus_per_trial=2)
    on_ray(grid, tmp_path)  # one trial at a time: the start order is the order Tune was given
    keeper = Bookkeeper(tmp_path, None)
    started = {
        e.label.split("/")[-2]: float(read_records(keeper.checkpoint_of(e), e.trial_id)[1]["started_at"])
        for e in read_all(tmp_path)
    }
    assert sorted(started, key=started.get) == ["exp_gradnorm", "entropy", "random"]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` process on 127.0.0.1 with its own SQLite store; the test may stop and restart it."""
    server = MlflowServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()


def test_results_reach_a_real_tracking_server(node_with_2_cpus, mlflow_server, tmp_path, capfd):
    grid = grid_of("server", seeds=(0,))
    on_ray(grid, tmp_path, tracking_uri=mlflow_server.uri)
    points = mlflow_runs(tmp_path, grid.name, mlflow_server.uri)
    assert len(points) == 2 and all(p == ("FINISHED", [10, 20, 30, 40, 50]) for p in points.values())
    assert not (tmp_path / "mlflow.db").exists(), "no SQLite store beside a tracking server"
    assert "View run" not in capfd.readouterr().out, "MLflow's own links stay off albench's console"


def test_a_tracking_server_that_goes_away_mid_grid_stalls_no_trial_and_mlflow_ends_complete(
    node_with_2_cpus, mlflow_server, tmp_path, monkeypatch
):
    # MLflow's client gives up on a refused call at once, so albench's own retries are what bring it back
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    grid = grid_of("outage", strategies=("random", "entropy"), seeds=(0, 1), epochs=25)
    rows = lambda: sum(e.rounds_done for e in read_all(tmp_path))  # noqa: E731
    seen: dict[str, int] = {}

    def stop_then_start_the_server():
        wait_for(lambda: rows() >= 2)
        mlflow_server.stop()
        seen["at_stop"] = rows()
        wait_for(lambda: rows() >= seen["at_stop"] + 6, timeout_s=240)  # the trials go on without it
        seen["at_start"] = rows()
        mlflow_server.start()

    outage = threading.Thread(target=stop_then_start_the_server)
    outage.start()
    lines: list[str] = []
    entries = on_ray(grid, tmp_path, tracking_uri=mlflow_server.uri, report=lines.append)
    outage.join()
    assert {e.status for e in entries} == {"done"}
    assert seen["at_start"] >= seen["at_stop"] + 6, f"rows filed while MLflow was away: {seen}"
    assert any("MLflow at" in line and "failed" in line for line in lines), lines
    assert any("MLflow is reachable again" in line for line in lines), lines
    points = mlflow_runs(tmp_path, grid.name, mlflow_server.uri)  # every point once, every run finished
    assert len(points) == 4 and all(p == ("FINISHED", [10, 20, 30, 40, 50]) for p in points.values()), points
    assert all(e.mlflow_synced.endswith("|5|FINISHED") for e in read_all(tmp_path)), "the ledger knows it"


def wait_for(condition, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and not condition():
        time.sleep(0.2)


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_lost_node_is_one_console_line_naming_it_and_ray_keeps_quiet_unless_verbose(
    two_nodes_with_2_cpus_each, ray_head_without_cpus, tmp_path, verbose
):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("[random, lplgrad]", "[random, ent_gradnorm]").replace("epochs: 8", "epochs: 25"))
    results, doomed = tmp_path / "r", two_nodes_with_2_cpus_each[1]
    command = ["run", grid, "--results", results, "--address", ray_head_without_cpus.address, "--tracking-uri", "none"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *map(str, command), *(["--verbose"] if verbose else [])],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def doomed_mid_trial() -> bool:
        entries = read_all(results) if (results / "trials").is_dir() else []
        return any(e.nodes and e.nodes[-1] == doomed.node_id and 0 < e.rounds_done < e.n_rounds for e in entries)

    wait_until(lambda: doomed_mid_trial() or driver.poll() is not None)
    assert driver.poll() is None, "a trial was mid-way on the second node"
    ray_head_without_cpus.remove_node(doomed)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    lost = [line for line in out.splitlines() if "retrying from round" in line]
    assert lost and all(f"the node {doomed.node_id[:12]} (" in line and "was lost" in line for line in lost), out
    chatter = [line for line in (out + err).splitlines() if re.search(r"Traceback|\(raylet\)| INFO | WARNING ", line)]
    assert bool(chatter) == verbose, chatter[:20]
