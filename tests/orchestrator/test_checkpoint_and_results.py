"""Checkpoints and the Parquet sink: atomic, idempotent, and loud about corrupt or foreign files."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from experiments.errors import CheckpointError
from experiments.results import read_rounds, rounds_done, rows_of, write_rounds
from orchestrator.engine.checkpoint import load_checkpoint, read_records, save_checkpoint
from orchestrator.engine.trial import run_trial
from tests.conftest import tiny_spec


@pytest.fixture(scope="module")
def finished(digits):
    spec = tiny_spec("margin")
    return spec, run_trial(spec, digits)


def test_a_checkpoint_round_trips_and_keeps_its_records_apart_from_the_weights(finished, tmp_path):
    spec, state = finished
    save_checkpoint(state, tmp_path / "checkpoint")
    save_checkpoint(state, tmp_path / "checkpoint")  # replacing an existing one
    loaded = load_checkpoint(str(tmp_path / "checkpoint"), spec.trial_id)
    assert loaded.records == state.records and loaded.weights.keys() == state.weights.keys()
    assert all(torch.equal(loaded.weights["backbone"][k], v) for k, v in state.weights["backbone"].items())
    records, _ = read_records(str(tmp_path / "checkpoint"), spec.trial_id)
    assert records == state.records
    assert not list(tmp_path.glob(".*tmp*")), "no temporary folders left behind"


def test_corrupt_and_foreign_checkpoints_raise_errors_that_say_what_to_do(finished, tmp_path):
    spec, state = finished
    folder = tmp_path / "checkpoint"
    save_checkpoint(state, folder)
    with pytest.raises(CheckpointError, match="belongs to trial .* not other"):
        load_checkpoint(str(folder), "other")
    weights = folder / "state.pt"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as after a crash of a non-atomic writer
    with pytest.raises(CheckpointError, match="corrupt or unreadable.*delete that folder"):
        load_checkpoint(str(folder), spec.trial_id)
    (folder / "records.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        read_records(str(folder), spec.trial_id)


def test_parquet_upsert_is_idempotent_and_unique_on_trial_and_round(finished, tmp_path):
    spec, state = finished
    rows = rows_of(spec, [replace(r, git_sha="abc123") for r in state.records])
    write_rounds(tmp_path, rows[:2])
    write_rounds(tmp_path, rows[1:3])  # round 1 again: replaced, not duplicated
    write_rounds(tmp_path, rows)
    write_rounds(tmp_path, rows)
    frame = pd.read_parquet(tmp_path / "rounds")
    assert len(frame) == 4 and not frame.duplicated(["trial_id", "round"]).any()
    assert rounds_done(tmp_path, spec.trial_id) == 4
    for column in (
        "experiment",
        "trial_id",
        "dataset",
        "regime",
        "strategy",
        "strategy_name",
        "seed",
        "round",
        "n_labeled",
        "test_accuracy",
        "train_seconds",
        "query_seconds",
        "git_sha",
        "spec",
        "spec_version",
        "per_class_accuracy",
    ):
        assert column in frame.columns
    assert frame.sort_values("round")["test_accuracy"].tolist() == [r.test_accuracy for r in state.records]
    assert frame["git_sha"].unique().tolist() == ["abc123"]


def test_readers_ignore_a_half_written_temporary_file(finished, tmp_path):
    spec, state = finished
    write_rounds(tmp_path, rows_of(spec, state.records))
    (tmp_path / "rounds" / f".{spec.trial_id}.parquet.tmp-999").write_bytes(b"PAR1 garbage from a crash")
    assert len(read_rounds(tmp_path)) == 4


def test_an_empty_results_folder_reads_as_an_empty_frame(tmp_path):
    frame = read_rounds(tmp_path)
    assert frame.empty and "test_accuracy" in frame.columns


def test_rows_record_the_deterministic_mode_and_the_rounds_gpu_use(finished, tmp_path):
    spec, state = finished
    measured = [replace(r, gpu_peak_allocated_mib=512.0, gpu_peak_reserved_mib=640.0) for r in state.records]
    strict = tiny_spec("margin", deterministic=True)
    write_rounds(tmp_path, rows_of(spec, state.records))
    write_rounds(tmp_path, rows_of(strict, measured))
    rows = read_rounds(tmp_path).set_index("trial_id")
    assert rows.loc[spec.trial_id, "deterministic"].tolist() == [False] * 4
    assert rows.loc[strict.trial_id, "deterministic"].tolist() == [True] * 4
    assert rows.loc[spec.trial_id, "gpu_peak_allocated_mib"].isna().all(), "a CPU round used no GPU"
    assert rows.loc[strict.trial_id, ["gpu_peak_allocated_mib", "gpu_peak_reserved_mib"]].values.tolist() == (
        [[512.0, 640.0]] * 4
    )
    assert rows["gpu_utilization"].isna().all()
    assert strict.trial_id != spec.trial_id, "the deterministic mode is a training setting: part of the id"
