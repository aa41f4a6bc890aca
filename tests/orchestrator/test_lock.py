"""One driver per results folder: a second `albench run` on a folder in use is refused naming the holder; a lock
left by a driver killed with kill -9 is taken over; `albench status` reads a folder in use. Real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.store.ledger import read_all
from orchestrator.store.lock import LOCK_FILE
from tests.orchestrator.test_cli import ENV, albench

pytestmark = pytest.mark.slow

GRID = """
name: locked
datasets: [digits]
regimes:
  tiny: {initial: 10, query: 10, subset: 100, budget: 50}
strategies: [random, entropy]
seeds: [0, 1]
train: {epochs: 30}
"""


def start_in_process_driver(grid: Path, results: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(grid), "--results", str(results), "--in-process"]
    command += ["--tracking-uri", "none"]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_holder(results: Path, driver: subprocess.Popen, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    path = results / LOCK_FILE
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.stdout.read()
        if path.exists() and path.read_text().strip():
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"no lock in {results} after {seconds} s")


@pytest.fixture
def grid(tmp_path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder_and_status_still_reads(grid, tmp_path):
    results = tmp_path / "results"
    first = start_in_process_driver(grid, results)
    try:
        holder = wait_for_holder(results, first)
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = albench("run", grid, "--results", results, "--in-process", "--tracking-uri", "none")
        assert second.returncode != 0
        assert (
            f"{results} is in use by albench pid {first.pid} on host {socket.gethostname()}, "
            f"started {holder['started']}" in second.stderr
        ), second.stderr
        assert f"kill {first.pid} on {socket.gethostname()}" in second.stderr
        assert "trials already complete" not in second.stdout  # refused before planning anything
        status = albench("status", "--results", results)
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout or "pending" in status.stdout, status.stdout
    finally:
        out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out
    assert {e.status for e in read_all(results)} == {"done"}
    assert (results / LOCK_FILE).read_text() == ""  # released at the end


def test_a_lock_left_by_a_driver_killed_with_kill_9_is_taken_over_and_the_grid_completes(grid, tmp_path):
    results = tmp_path / "results"
    first = start_in_process_driver(grid, results)
    holder = wait_for_holder(results, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert json.loads((results / LOCK_FILE).read_text()) == holder  # the dead driver's lock is still written
    second = albench("run", grid, "--results", results, "--in-process", "--tracking-uri", "none")
    assert second.returncode == 0, second.stderr
    assert f"took over the lock of {results} left by albench pid {first.pid}" in second.stdout
    assert {e.status for e in read_all(results)} == {"done"}
