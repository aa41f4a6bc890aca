"""The `albench` command as a user runs it: real processes, real files, a real kill -9 of the driver.

Commands that need no Ray run in this process through `orchestrator.cli.main` (fast); those that start Ray or
kill a driver are real subprocesses, marked slow.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from experiments.results import read_rounds, trial_file
from orchestrator.store.ledger import read_all
from tests.orchestrator.readers import mlflow_runs, records, trial_runs

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
    """The command in a process of its own."""
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=ENV, **kwargs)


def albench_here(*args) -> SimpleNamespace:
    """The command's `main` in this process (only for commands that start no Ray)."""
    from orchestrator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


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


@pytest.mark.slow
def test_a_user_error_prints_one_message_without_a_traceback_from_the_real_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRID.replace("lplgrad", "lplgard"))
    done = albench("run", str(bad), "--results", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'lplgard' is unknown; known:" in done.stderr


def test_user_errors_print_one_message_without_a_traceback(tmp_path):
    for text, expected in [
        (GRID.replace("lplgrad", "lplgard"), "'lplgard' is unknown; known:"),
        (GRID.replace("train: {epochs: 8}", "train: {epochs: ten}"), "train.epochs: Input should be a valid integer"),
        (GRID.replace("[random, lplgrad]", "[random, {name: bait, lamda: 0.1}]"), "unknown setting 'lamda'"),
        (GRID.replace("budget: 50", "budget: 5000"), "budget 5000 exceeds the train pool"),
    ]:
        grid = tmp_path / "grid.yaml"
        grid.write_text(text)
        done = albench_here("run", grid, "--results", tmp_path / "r", "--in-process")
        assert done.returncode == 2 and "Traceback" not in done.stderr and expected in done.stderr, done.stderr
    missing = tmp_path / "cifar.yaml"
    missing.write_text(GRID.replace("[digits]", "[cifar10]"))
    done = albench_here("run", missing, "--results", tmp_path / "r", "--data-root", tmp_path / "nodata")
    assert done.returncode == 2 and "dataset 'cifar10' not found" in done.stderr
    assert not (tmp_path / "r" / "rounds").exists(), "nothing ran"


@pytest.mark.slow  # more than 2 s
def test_a_corrupt_checkpoint_stops_the_run_with_the_fix_and_a_deleted_one_restarts_its_trial(grid_file, tmp_path):
    results = tmp_path / "r"
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    assert albench_here("run", grid_file, "--results", results, "--in-process").returncode == 0
    before = records(results)
    (entry,) = read_all(results)
    checkpoint = results / entry.checkpoint  # kept relative to the results folder
    trial_file(results, entry.trial_id).unlink()  # its rows must come back from the checkpoint...
    Path(checkpoint, "records.json").write_text("{broken")  # ...which is broken
    done = albench_here("run", grid_file, "--results", results, "--in-process")
    assert done.returncode == 2 and "is corrupt or unreadable" in done.stderr and "delete that folder" in done.stderr
    shutil.rmtree(checkpoint)
    done = albench_here("run", grid_file, "--results", results, "--in-process")
    assert done.returncode == 0 and "the trial restarts from round 1" in done.stdout
    pd.testing.assert_frame_equal(records(results), before)


def test_a_crash_between_checkpoint_and_parquet_write_is_caught_up_without_retraining(grid_file, tmp_path):
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[random, lplgrad]", "[random]"))
    results = tmp_path / "r"
    assert albench_here("run", grid_file, "--results", results, "--in-process").returncode == 0
    before = read_rounds(results)
    trial_file(results, before["trial_id"].iloc[0]).unlink()  # the checkpoint holds all 5 rounds, the sink none
    done = albench_here("run", grid_file, "--results", results, "--in-process")
    assert done.returncode == 0, done.stderr
    # identical timings prove the rows were re-projected from the checkpoint, not recomputed
    pd.testing.assert_frame_equal(read_rounds(results).reset_index(drop=True), before.reset_index(drop=True))


@pytest.mark.slow
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


@pytest.mark.slow  # more than 2 s
def test_variants_of_a_strategy_are_distinct_trials_in_parquet_mlflow_status_and_reports(tmp_path):
    grid = tmp_path / "variants.yaml"
    grid.write_text(
        GRID.replace("[random, lplgrad]", "[entropy, {name: ent_gradnorm, aggregate: l2}, ent_gradnorm]")
        .replace("seeds: [0, 1]", "seeds: [0]")
        .replace("epochs: 8", "epochs: 2")
    )
    results = tmp_path / "r"
    done = albench_here("run", grid, "--results", results, "--in-process")
    assert done.returncode == 0, done.stderr
    labels = ["entropy", "ent_gradnorm(aggregate=l2)", "ent_gradnorm"]
    frame = read_rounds(results)
    assert sorted(frame["strategy"].unique()) == sorted(labels) and frame["trial_id"].nunique() == 3
    assert set(frame["strategy_name"]) == {"entropy", "ent_gradnorm"}
    from orchestrator.store.tracking import Tracker, default_tracking_uri

    tracker = Tracker(default_tracking_uri(results), "cli-test", results)
    runs = trial_runs(tracker)
    assert sorted(r.data.tags["strategy"] for r in runs) == sorted(labels)
    assert sorted(r.data.params["strategy.aggregate"] for r in runs if "ent_gradnorm" in r.info.run_name) == [
        "l2",
        "layer_sum",
    ]
    fits = [m.value for m in tracker.client.get_metric_history(runs[0].info.run_id, "train_accuracy")]
    assert len(fits) == 5 and all(0 < f <= 1 for f in fits), "each round's fit on its labeled set"
    assert frame["train_accuracy"].between(0, 1).all()
    status = albench_here("status", "--results", results).stdout
    assert all(f"digits/tiny/{label}/seed0" in status for label in labels)
    report = albench_here("report", "--results", results, "--out", tmp_path / "report")
    assert report.returncode == 0 and all(label in report.stdout for label in labels)


@pytest.mark.slow  # more than 2 s
def test_a_changed_grid_says_which_trials_are_new_and_what_the_kept_ones_computed(grid_file, tmp_path):
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 8", "epochs: 2"))
    results = tmp_path / "r"
    assert albench_here("run", grid_file, "--results", results, "--in-process").returncode == 0
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 8", "epochs: 3"))
    done = albench_here("run", grid_file, "--results", results, "--in-process")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "the folder keeps trial" in line]
    assert len(lines) == 2, done.stdout
    (lplgrad,) = [line for line in lines if line.startswith("digits/tiny/lplgrad/seed0: new trial")]
    assert "(5 of 5 rounds), computed with strategy.detach_epoch: 0 -> 1; train.epochs: 2 -> 3" in lplgrad
    assert len(read_rounds(results)) == 20, "the earlier trials' rows are kept beside the new ones"


def test_table_list_and_status_on_empty_folders(tmp_path):
    done = albench_here("table", "--results", tmp_path)
    assert done.returncode == 2 and "no results in" in done.stderr
    assert albench_here("status", "--results", tmp_path).returncode == 2
    listing = albench_here("list").stdout
    assert "lplgrad" in listing and "cifar100" in listing and "resnet18" in listing
    assert "bait              lam (float > 0, default 1.0), oversample (int > 0, default 2)" in listing


@pytest.mark.slow  # more than 2 s
def test_a_rerun_of_a_finished_grid_reads_no_checkpoint_and_rebuilds_no_report_until_the_rows_change(
    grid_file, tmp_path
):
    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 8", "epochs: 2"))
    results = tmp_path / "r"
    assert albench_here("run", grid_file, "--results", results, "--in-process").returncode == 0
    index = results / "report" / "index.html"
    made = index.stat().st_mtime_ns
    for folder in (results / "checkpoints").iterdir():  # a no-op re-run must not need them
        if folder.name != "round0":
            (folder / "records.json").write_text("not json")
    again = albench_here("run", grid_file, "--results", results, "--in-process")
    assert again.returncode == 0, again.stderr
    assert "2 trials" in again.stdout and index.stat().st_mtime_ns == made, "the report was not rebuilt"
    from orchestrator.store.tracking import Tracker, default_tracking_uri

    parent = Tracker(default_tracking_uri(results), "cli-test", results).find_grid()
    tracker = Tracker(default_tracking_uri(results), "cli-test", results)
    assert tracker.client.get_run(parent).info.status == "FINISHED", "the grid's parent run is closed again"

    grid_file.write_text(GRID.replace("seeds: [0, 1]", "seeds: [0, 1]").replace("epochs: 8", "epochs: 2"))
    more = albench_here("run", grid_file, "--results", results, "--in-process")
    assert more.returncode == 0, more.stderr
    assert index.stat().st_mtime_ns != made, "new rows: the report is made again"
