"""The `albench` command as a user runs it: a real process, real files, a real kill -9 in the middle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.results import read_rounds

GRID = """
name: cli-test
datasets: [digits]
regimes:
  tiny: {initial: 10, query: 10, subset: 100, budget: 50}
strategies: [random, lplgrad]
seeds: [0, 1]
train: {epochs: 6}
"""


def albench(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


@pytest.fixture
def grid_file(tmp_path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def _records(results: Path) -> pd.DataFrame:
    frame = read_rounds(results)
    columns = ["trial_id", "round", "n_labeled", "test_accuracy", "train_loss", "selected"]
    frame = frame[columns].sort_values(["trial_id", "round"]).reset_index(drop=True)
    frame["selected"] = frame["selected"].map(list)
    return frame


@pytest.mark.slow
def test_kill_9_mid_grid_then_rerun_completes_with_exactly_the_uninterrupted_records(grid_file, tmp_path):
    reference = albench("run", str(grid_file), "--results", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    assert "test accuracy %, mean ± std over 2 seeds" in reference.stdout

    results = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", str(grid_file), "--results", str(results)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((results / "rounds").glob("*.parquet"))) < 2:
        time.sleep(0.05)  # kill once the second trial has written a round: it is mid-trial
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = read_rounds(results)
    assert 0 < len(interrupted) < 20, "killed mid-grid"

    resumed = albench("run", str(grid_file), "--results", str(results))
    assert resumed.returncode == 0, resumed.stderr
    assert "complete, skipped" in resumed.stdout  # the finished trial is not rerun
    after = _records(results)
    assert len(after) == 4 * 5 and not after.duplicated(["trial_id", "round"]).any()
    pd.testing.assert_frame_equal(after, _records(tmp_path / "reference"))

    again = albench("run", str(grid_file), "--results", str(results))
    assert again.stdout.count("complete, skipped") == 4 and len(read_rounds(results)) == 20


def test_user_errors_print_one_line_without_a_traceback(tmp_path):
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


def test_a_corrupt_checkpoint_stops_the_run_with_the_fix_and_keeps_finished_rows(grid_file, tmp_path):
    results = tmp_path / "r"
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    assert albench("run", str(grid_file), "--results", str(results)).returncode == 0
    rows = len(read_rounds(results))
    (results / "rounds" / next((results / "rounds").glob("*.parquet")).name).unlink()  # make the trial pending again
    checkpoint = next((results / "checkpoints").glob("*.pt"))
    checkpoint.write_bytes(b"not a checkpoint")
    done = albench("run", str(grid_file), "--results", str(results))
    assert done.returncode == 2 and "is corrupt or unreadable" in done.stderr and "delete it" in done.stderr
    checkpoint.unlink()
    assert albench("run", str(grid_file), "--results", str(results)).returncode == 0
    assert len(read_rounds(results)) == rows


def test_table_and_list_commands(tmp_path):
    done = albench("table", "--results", str(tmp_path))
    assert done.returncode == 2 and "no results in" in done.stderr
    listing = albench("list")
    assert "lplgrad" in listing.stdout and "cifar100" in listing.stdout and "resnet18" in listing.stdout


def test_a_crash_between_checkpoint_and_parquet_write_is_caught_up_without_retraining(grid_file, tmp_path):
    from orchestrator.results import trial_file

    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    results = tmp_path / "r"
    assert albench("run", str(grid_file), "--results", str(results)).returncode == 0
    before = read_rounds(results)
    trial_id = before["trial_id"].iloc[0]
    trial_file(results, trial_id).unlink()  # the checkpoint holds all 5 rounds, the sink none
    done = albench("run", str(grid_file), "--results", str(results))
    assert done.returncode == 0, done.stderr
    after = read_rounds(results)
    # identical timings prove the rows were re-projected from the checkpoint, not recomputed
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))


def test_a_diverging_trial_fails_alone_and_the_grid_goes_on(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        GRID.replace("train: {epochs: 6}", "train: {epochs: 2, lr: 1.0e+12}").replace("seeds: [0, 1]", "seeds: [0]")
    )
    done = albench("run", str(grid), "--results", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "2 of 2 trials failed" in done.stderr and "training diverged" in done.stderr and "Lower train.lr" in done.stderr
    )
    assert done.stdout.count("FAILED") == 2
