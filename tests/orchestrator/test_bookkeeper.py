"""The bookkeeper without Ray or a subprocess: status transitions, and the catch-up of the ledger, Parquet and a
real MLflow store after a crash between a checkpoint and its sinks."""

from __future__ import annotations

import shutil

import pytest

from experiments.results import read_rounds
from orchestrator.engine.checkpoint import save_checkpoint
from orchestrator.engine.records import TrialState
from orchestrator.engine.trial import run_trial
from orchestrator.store.bookkeeper import Bookkeeper, StatusError
from orchestrator.store.ledger import TrialStatus, read_entry
from orchestrator.store.tracking import Tracker, default_tracking_uri
from tests.conftest import tiny_spec
from tests.orchestrator.readers import mlflow_runs


@pytest.fixture(scope="module")
def finished(digits):
    """A real 4-round lplgrad trial: its spec and its state after each round."""
    spec, states = tiny_spec("lplgrad"), []

    def keep(state: TrialState) -> None:
        states.append(TrialState(state.trial_id, state.labeled_round.clone(), state.weights, list(state.records)))

    run_trial(spec, digits, on_round=keep)
    return spec, states


def keeper_with_mlflow(results) -> Bookkeeper:
    return Bookkeeper(results, Tracker(default_tracking_uri(results), "tests", results))


def checkpoint(tmp_path, state: TrialState) -> str:
    folder = tmp_path / "results" / "checkpoints" / state.trial_id
    save_checkpoint(state, folder)
    return str(folder)


def interrupted_after_two_rounds(tmp_path, spec, states):
    """A run that recorded two rounds of the trial, then ended (Ctrl-C) with the trial mid-way."""
    keeper = Bookkeeper(tmp_path / "results", None)
    (item,) = keeper.plan([spec], report=lambda line: None)
    keeper.start(item)
    keeper.record(item, checkpoint(tmp_path, states[1]), states[1].records, {})
    keeper.release([item])
    return keeper, item


def test_a_trial_goes_pending_running_done_and_never_runs_again(finished, tmp_path):
    spec, states = finished
    keeper = Bookkeeper(tmp_path / "results", None)
    (item,) = keeper.plan([spec], report=lambda line: None)
    assert item.entry.status == TrialStatus.PENDING and not item.complete
    keeper.start(item)
    assert read_entry(keeper.results, spec.trial_id).status == TrialStatus.RUNNING
    for state in states:
        keeper.record(item, checkpoint(tmp_path, state), state.records, {"device": "cpu: test"})
    keeper.finish(item)
    entry = read_entry(keeper.results, spec.trial_id)
    assert entry.status == TrialStatus.DONE and entry.rounds_done == 4
    assert entry.checkpoint == f"checkpoints/{spec.trial_id}", "kept relative to the results folder"
    with pytest.raises(StatusError, match="done -> running is not allowed"):
        keeper.start(item)
    (again,) = keeper.plan([spec], report=lambda line: None)
    assert again.complete and again.entry.status == TrialStatus.DONE


def test_an_interrupted_or_failed_trial_is_pending_at_the_next_plan(finished, tmp_path):
    spec, states = finished
    keeper, item = interrupted_after_two_rounds(tmp_path, spec, states)
    assert read_entry(keeper.results, spec.trial_id).status == TrialStatus.PENDING
    keeper.start(item)
    keeper.fail(item, "DivergedError: training diverged")
    entry = read_entry(keeper.results, spec.trial_id)
    assert entry.status == TrialStatus.FAILED and entry.error.startswith("DivergedError")
    keeper.finish(item)  # Tune reports completion after the failure: it stays failed
    assert read_entry(keeper.results, spec.trial_id).status == TrialStatus.FAILED
    (retry,) = keeper.plan([spec], report=lambda line: None)
    assert retry.entry.status == TrialStatus.PENDING and retry.entry.error == "" and retry.entry.rounds_done == 2


def test_a_crash_between_checkpoint_and_sinks_is_caught_up_by_the_next_plan(finished, tmp_path):
    spec, states = finished
    results = tmp_path / "results"
    keeper = keeper_with_mlflow(results)
    (item,) = keeper.plan([spec], report=lambda line: None)
    keeper.start(item)
    for state in states[:2]:
        keeper.record(item, checkpoint(tmp_path, state), state.records, {"device": "cpu: test"})
    save_checkpoint(states[2], results / "checkpoints" / spec.trial_id)  # the crash: round 3 checkpointed only
    assert len(read_rounds(results)) == 2 and read_entry(results, spec.trial_id).rounds_done == 2

    caught_up = keeper_with_mlflow(results)  # the next `albench run`, in a new driver
    (item,) = caught_up.plan([spec], report=lambda line: None)
    rows = read_rounds(results)
    assert item.entry.rounds_done == 3 and item.entry.status == TrialStatus.PENDING
    assert sorted(rows["round"]) == [0, 1, 2] and not rows.duplicated(["trial_id", "round"]).any()
    assert rows.sort_values("round")["train_seconds"].tolist() == [r.train_seconds for r in states[2].records]
    assert caught_up.settle() == 0  # MLflow, written by the sink's thread, is up to date
    assert mlflow_runs(results, "tests") == {spec.trial_id: ("SCHEDULED", [10, 20, 30])}
    caught_up.plan([spec], report=lambda line: None)  # again: nothing duplicated
    caught_up.settle()
    assert len(read_rounds(results)) == 3 and mlflow_runs(results, "tests")[spec.trial_id][1] == [10, 20, 30]


def finish(keeper: Bookkeeper, tmp_path, spec, states) -> None:
    (item,) = keeper.plan([spec], report=lambda line: None)
    keeper.start(item)
    for state in states:
        keeper.record(item, checkpoint(tmp_path, state), state.records, {})
    keeper.finish(item)
    assert keeper.settle() == 0


class Counting:
    """An MlflowClient whose every call is counted (and still made)."""

    def __init__(self, client) -> None:
        self.client, self.calls = client, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.client, name)


def test_a_finished_trial_is_replanned_without_reading_its_checkpoint_or_asking_mlflow(finished, tmp_path, monkeypatch):
    spec, states = finished
    results = tmp_path / "results"
    finish(keeper_with_mlflow(results), tmp_path, spec, states)
    synced = read_entry(results, spec.trial_id).mlflow_synced
    assert synced.endswith("|4|FINISHED"), synced

    import orchestrator.store.bookkeeper as bookkeeper

    def no_checkpoint(*args):
        raise AssertionError("a finished, filed trial's checkpoint was read")

    monkeypatch.setattr(bookkeeper, "read_records", no_checkpoint)
    monkeypatch.setattr(bookkeeper, "checkpoint_exists", no_checkpoint)
    again = keeper_with_mlflow(results)
    again.tracker.client = counting = Counting(again.tracker.client)
    (item,) = again.plan([spec], report=lambda line: None)
    assert again.settle() == 0
    assert item.complete and item.entry.status == TrialStatus.DONE and counting.calls == []

    # MLflow not known to hold it (an entry of an albench before fingerprints): projected again, and known after
    monkeypatch.undo()
    entry = read_entry(results, spec.trial_id)
    entry.mlflow_synced = ""
    from orchestrator.store.ledger import write_entry

    write_entry(results, entry)
    behind = keeper_with_mlflow(results)
    behind.tracker.client = counting = Counting(behind.tracker.client)
    behind.plan([spec], report=lambda line: None)
    assert behind.settle() == 0 and "get_metric_history" in counting.calls
    assert read_entry(results, spec.trial_id).mlflow_synced == synced
    assert mlflow_runs(results, "tests") == {spec.trial_id: ("FINISHED", [10, 20, 30, 40])}


def test_a_bookkeeper_with_its_mlflow_thread_pickles_as_tune_pickles_its_callbacks(finished, tmp_path):
    import pickle

    spec, states = finished
    keeper = keeper_with_mlflow(tmp_path / "results")
    keeper.plan([spec], report=lambda line: None)  # the sink's thread is running
    copy = pickle.loads(pickle.dumps(keeper))
    assert copy.sink.idle and copy.sink.behind() == 0 and keeper.settle() == 0


def test_a_run_that_mlflow_lost_is_found_again_by_its_tag_or_made_anew(finished, tmp_path):
    spec, states = finished
    results = tmp_path / "results"
    finish(keeper_with_mlflow(results), tmp_path, spec, states)
    entry = read_entry(results, spec.trial_id)
    keeper = keeper_with_mlflow(results)
    keeper.tracker.client.delete_run(entry.mlflow_run_id)  # deleted in the UI
    entry.mlflow_synced = ""
    from orchestrator.store.ledger import write_entry

    write_entry(results, entry)
    keeper.plan([spec], report=lambda line: None)
    assert keeper.settle() == 0
    (run_id, (status, steps)) = next(iter(mlflow_runs(results, "tests").items()))
    assert (status, steps) == ("FINISHED", [10, 20, 30, 40])
    assert read_entry(results, spec.trial_id).mlflow_run_id not in (None, entry.mlflow_run_id)


def test_a_moved_results_folder_still_finds_its_checkpoints(finished, tmp_path):
    spec, states = finished
    interrupted_after_two_rounds(tmp_path, spec, states)
    shutil.move(tmp_path / "results", tmp_path / "moved")
    lines = []
    (item,) = Bookkeeper(tmp_path / "moved", None).plan([spec], report=lines.append)
    assert item.entry.rounds_done == 2 and not lines, "no 'checkpoint is gone'"


def test_a_rounds_gpu_use_becomes_mlflow_metrics_and_a_cpu_round_logs_none(finished, tmp_path):
    from dataclasses import replace

    spec, states = finished
    tracker = Tracker(default_tracking_uri(tmp_path), "tests", tmp_path)
    cpu_run, gpu_run = tracker.run_for(spec, "sha"), tracker.run_for(tiny_spec("lplgrad", seed=1), "sha")
    tracker.log_rounds(cpu_run, states[-1].records)
    used = [
        replace(r, gpu_peak_allocated_mib=100.0 + r.round, gpu_peak_reserved_mib=200.0, gpu_utilization=55.5)
        for r in states[-1].records
    ]
    tracker.log_rounds(gpu_run, used)
    history = lambda run, name: [(m.step, m.value) for m in tracker.client.get_metric_history(run, name)]  # noqa: E731
    assert history(gpu_run, "gpu_peak_allocated_mib") == [(10, 100.0), (20, 101.0), (30, 102.0), (40, 103.0)]
    assert [v for _, v in history(gpu_run, "gpu_utilization")] == [55.5] * 4
    assert history(cpu_run, "gpu_peak_allocated_mib") == [] and len(history(cpu_run, "test_accuracy")) == 4
