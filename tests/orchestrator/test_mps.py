"""NVIDIA MPS: detected from the control daemon's pipe where CUDA clients look for it (a real named pipe here),
recorded with every GPU round, and shown in the trial's MLflow run header (a real SQLite store)."""

from __future__ import annotations

import os
from dataclasses import replace

from experiments.records import RoundRecord
from orchestrator.engine.gpu import mps_active, mps_daemon_listening
from orchestrator.store.tracking import Tracker, default_tracking_uri
from tests.conftest import tiny_spec


def test_mps_is_seen_only_where_its_control_pipe_is(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert not mps_daemon_listening()  # no daemon started
    (tmp_path / "control").write_text("")
    assert not mps_daemon_listening()  # a plain file is not the daemon's pipe
    (tmp_path / "control").unlink()
    os.mkfifo(tmp_path / "control")  # what `nvidia-cuda-mps-control -d` creates
    assert mps_daemon_listening()
    assert mps_active("cuda:0") is True and mps_active("cpu") is None  # MPS does not apply to a CPU trial


def test_the_run_header_says_whether_mps_served_the_trial_and_how_it_was_fused(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "mps", tmp_path)
    spec = tiny_spec("entropy")
    run_id = tracker.run_for(spec, "sha")
    first = RoundRecord(0, 10, 0.5, (0.5,) * 10, 1.0, (1, 2), 1.0, 0.1, 0.1, device="NVIDIA H200", mps=False)
    tracker.log_rounds(run_id, [first])
    assert tracker.client.get_run(run_id).data.tags["mps"] == "off"
    later = replace(first, round=1, n_labeled=20, mps=True, fused_with=4)
    tracker.log_rounds(run_id, [first, later])
    tags = tracker.client.get_run(run_id).data.tags
    assert (tags["mps"], tags["fused_with"]) == ("on", "4")
