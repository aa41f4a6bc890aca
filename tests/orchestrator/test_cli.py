"""The `albench` command as a user runs it: real processes, real files, a real kill -9 of the driver."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.ledger import read_all
from orchestrator.results import read_rounds, trial_file
from tests.orchestrator.readers import mlflow_runs, records

GRID = """
name: cli-test
datasets: [digits]
regimes:
  tiny: {initial: 10, query: 10, subset: 100, budget: 50}
strategies: [random, lplgrad]
seeds: [0, 1]
train: {epochs: 8}
resources: {gpus_per_trial: 0, cpus_per_trial: 1, scoring_shards: 1}
"""

ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each command starts its own local Ray


def albench(*args, **kwargs):
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=ENV, **kwargs)


@pytest.fixture
def grid_file(tmp_path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def start_driver(grid_file: Path, results: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(grid_file), "--results", str(results)]
    return subprocess.Popen(command, env=ENV, **popen)


def wait_until(condition, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and not condition():
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.ray
def test_kill_9_of_the_driver_mid_grid_then_the_same_command_completes_exactly(grid_file, tmp_path):
    reference = albench("run", str(grid_file), "--results", str(tmp_path / "reference"), "--in-process")
    assert reference.returncode == 0, reference.stderr

    results = tmp_path / "killed"
    driver = start_driver(
        grid_file, results, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    wait_until(lambda: len(read_rounds(results)) >= 6 and any(e.status == "running" for e in read_all(results)))
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)  # the local Ray daemons the killed driver had started
    rows_before = len(read_rounds(results))
    assert 0 < rows_before < 20, "killed mid-grid"

    status = albench("status", "--results", str(results))
    assert "running" in status.stdout and "rounds done" in status.stdout

    resumed = albench("run", str(grid_file), "--results", str(results))
    assert resumed.returncode == 0, resumed.stderr
    after = read_rounds(results)
    assert len(after) == 20 and not after.duplicated(["trial_id", "round"]).any()
    pd.testing.assert_frame_equal(records(results), records(tmp_path / "reference"))
    runs = mlflow_runs(results, "cli-test")
    assert len(runs) == 4 and all(run == ("FINISHED", [10, 20, 30, 40, 50]) for run in runs.values())
    assert "mlflow ui --backend-store-uri sqlite:///" in resumed.stdout

    again = albench("run", str(grid_file), "--results", str(results))
    assert "4 of 4 trials already complete; 0 to run" in again.stdout and len(read_rounds(results)) == 20
    assert (
        albench("status", "--results", str(results))
        .stdout.strip()
        .endswith("0 running, 0 failed, 0 pending, 4 done; 20 rounds done")
    )


@pytest.mark.slow
@pytest.mark.ray
def test_ctrl_c_stops_the_grid_cleanly_and_the_same_command_finishes_it(grid_file, tmp_path):
    results = tmp_path / "r"
    driver = start_driver(grid_file, results, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(read_rounds(results)) >= 3)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 2 and "unfinished; run the same command again" in stderr
    assert all(e.status in ("pending", "done") for e in read_all(results)), "nothing is left marked running"
    assert albench("run", str(grid_file), "--results", str(results)).returncode == 0
    frame = read_rounds(results)
    assert len(frame) == 20 and not frame.duplicated(["trial_id", "round"]).any()


def test_user_errors_print_one_message_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRID.replace("lplgrad", "lplgard"))
    done = albench("run", str(bad), "--results", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'lplgard' is unknown; known:" in done.stderr

    missing = tmp_path / "cifar.yaml"
    missing.write_text(GRID.replace("[digits]", "[cifar10]"))
    done = albench("run", str(missing), "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "nodata"))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "dataset 'cifar10' not found" in done.stderr

    too_big = tmp_path / "big.yaml"
    too_big.write_text(GRID.replace("budget: 50", "budget: 5000"))
    done = albench("run", str(too_big), "--results", str(tmp_path / "r"))
    assert done.returncode == 2 and "budget 5000 exceeds the train pool" in done.stderr
    assert not (tmp_path / "r" / "rounds").exists(), "nothing ran"


def test_a_corrupt_checkpoint_stops_the_run_with_the_fix_and_a_deleted_one_restarts_its_trial(grid_file, tmp_path):
    results = tmp_path / "r"
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    assert albench("run", str(grid_file), "--results", str(results), "--in-process").returncode == 0
    before = records(results)
    (entry,) = read_all(results)
    trial_file(results, entry.trial_id).unlink()  # its rows must come back from the checkpoint...
    Path(entry.checkpoint, "records.json").write_text("{broken")  # ...which is broken
    done = albench("run", str(grid_file), "--results", str(results), "--in-process")
    assert done.returncode == 2 and "is corrupt or unreadable" in done.stderr and "delete that folder" in done.stderr
    shutil.rmtree(entry.checkpoint)
    done = albench("run", str(grid_file), "--results", str(results), "--in-process")
    assert done.returncode == 0 and "the trial restarts from round 1" in done.stdout
    pd.testing.assert_frame_equal(records(results), before)


def test_a_crash_between_checkpoint_and_parquet_write_is_caught_up_without_retraining(grid_file, tmp_path):
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    results = tmp_path / "r"
    assert albench("run", str(grid_file), "--results", str(results), "--in-process").returncode == 0
    before = read_rounds(results)
    trial_file(results, before["trial_id"].iloc[0]).unlink()  # the checkpoint holds all 5 rounds, the sink none
    done = albench("run", str(grid_file), "--results", str(results), "--in-process")
    assert done.returncode == 0, done.stderr
    # identical timings prove the rows were re-projected from the checkpoint, not recomputed
    pd.testing.assert_frame_equal(read_rounds(results).reset_index(drop=True), before.reset_index(drop=True))


@pytest.mark.ray
def test_a_diverging_trial_fails_alone_without_retries_and_status_shows_why(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        GRID.replace("train: {epochs: 8}", "train: {epochs: 2, lr: 1.0e+12}").replace("seeds: [0, 1]", "seeds: [0]")
    )
    done = albench("run", str(grid), "--results", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "2 of 2 trials failed" in done.stderr and "training diverged" in done.stderr and "Lower train.lr" in done.stderr
    )
    assert "retrying" not in done.stdout, "a deterministic error is not retried"
    status = albench("status", "--results", str(tmp_path / "r"))
    assert status.stdout.count("failed     0/5") == 2 and "DivergedError: training diverged" in status.stdout
    assert {run[0] for run in mlflow_runs(tmp_path / "r", "cli-test").values()} == {"FAILED"}


def test_table_list_and_status_on_empty_folders(tmp_path):
    done = albench("table", "--results", str(tmp_path))
    assert done.returncode == 2 and "no results in" in done.stderr
    assert albench("status", "--results", str(tmp_path)).returncode == 2
    listing = albench("list")
    assert "lplgrad" in listing.stdout and "cifar100" in listing.stdout and "resnet18" in listing.stdout
