"""The grid in a real MLflow store: a model-training experiment, one parent run per grid kept across reruns and
edits of the grid, trials as its children with their datasets as inputs, the grid and its summary on the parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.report.data import load
from orchestrator.store.ledger import read_all
from orchestrator.store.tracking import PARENT_FILE, Tracker, default_tracking_uri
from tests.orchestrator.readers import parent_runs, trial_runs
from tests.orchestrator.test_cli import albench_here

GRID = """\
name: tracked
datasets: [digits]
regimes: {tiny: {initial: 10, query: 10, subset: 100, budget: 30}}
strategies: [random, {name: ent_gradnorm, aggregate: l2}]
seeds: [0]
train: {epochs: 2}
resources: {gpus_per_trial: 0, cpus_per_trial: 1}
"""


@pytest.fixture(scope="module")
def ran_twice(tmp_path_factory):
    """The grid run, run again unchanged, then with a seed added: the results folder and the tracker."""
    folder = tmp_path_factory.mktemp("tracked")
    grid, results = folder / "grid.yaml", folder / "results"
    grid.write_text(GRID)
    for _ in range(2):
        assert albench_here("run", grid, "--results", results, "--in-process").returncode == 0
    grid.write_text(GRID.replace("seeds: [0]", "seeds: [0, 1]"))
    assert albench_here("run", grid, "--results", results, "--in-process").returncode == 0
    return results, Tracker(default_tracking_uri(results), "tracked", results)


@pytest.mark.slow  # more than 2 s
def test_the_experiment_opens_on_its_runs(ran_twice):
    _, tracker = ran_twice
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_one_parent_run_holds_every_trial_across_reruns_and_an_edited_grid(ran_twice):
    results, tracker = ran_twice
    (parent,) = parent_runs(tracker)
    children = trial_runs(tracker)
    assert len(children) == 4 == len(read_all(results)), "2 strategies x 2 seeds, each once"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    stored = json.loads((results / PARENT_FILE).read_text())
    assert stored == {tracker.uri: {"tracked": {"experiment_id": tracker.experiment_id, "run_id": parent.info.run_id}}}
    assert parent.info.status == "FINISHED" and parent.info.run_name == "grid: tracked"


def test_a_trial_runs_end_time_is_its_own_not_that_of_a_later_run_of_the_grid(tmp_path):
    """Every later `albench run` plans the DONE trials again and files them under the parent: their runs keep the
    end time of the run that computed them, so the UI's duration is the trial's own."""
    grid, results = tmp_path / "grid.yaml", tmp_path / "results"
    grid.write_text(GRID.replace("strategies: [random, {name: ent_gradnorm, aggregate: l2}]", "strategies: [random]"))
    assert albench_here("run", grid, "--results", results, "--in-process").returncode == 0
    tracker = Tracker(default_tracking_uri(results), "tracked", results)
    ended = {r.info.run_id: r.info.end_time for r in trial_runs(tracker)}
    assert len(ended) == 1 and all(ended.values())
    assert albench_here("run", grid, "--results", results, "--in-process").returncode == 0
    again = {r.info.run_id: (r.info.status, r.info.end_time) for r in trial_runs(tracker)}
    assert again == {run_id: ("FINISHED", end) for run_id, end in ended.items()}


def test_the_parent_holds_the_grid_as_written_and_resolved_and_its_summary(ran_twice):
    results, tracker = ran_twice
    (parent,) = parent_runs(tracker)
    run_id = parent.info.run_id
    assert sorted(a.path for a in tracker.client.list_artifacts(run_id, "grid")) == [
        "grid/grid.yaml",
        "grid/resolved.json",
    ]
    written = Path(tracker.client.download_artifacts(run_id, "grid/grid.yaml")).read_text()
    assert "seeds: [0, 1]" in written, "the latest grid file replaces the earlier copy"
    resolved = json.loads(Path(tracker.client.download_artifacts(run_id, "grid/resolved.json")).read_text())
    assert {t["trial_id"] for t in resolved["trials"]} == {e.trial_id for e in read_all(results)}
    trials = load(results).trials
    expected = trials.groupby("strategy")["aulc"].mean()
    metrics = parent.data.metrics
    assert metrics["aulc/digits/tiny/random"] == pytest.approx(expected["random"])
    l2 = expected["ent_gradnorm(aggregate=l2)"]
    assert metrics["aulc/digits/tiny/ent_gradnorm_aggregate_l2_"] == pytest.approx(l2)
    assert metrics["trials_done/digits/tiny/random"] == 2


def test_each_trial_logs_its_train_test_and_pool_datasets_once(ran_twice):
    _, tracker = ran_twice
    seen = set()
    for child in trial_runs(tracker):
        inputs = child.inputs.dataset_inputs
        contexts = {i.dataset.name: [t.value for t in i.tags if t.key == "mlflow.data.context"] for i in inputs}
        assert contexts == {"digits-train": ["train"], "digits-test": ["test"], "digits-pool": ["pool"]}
        seen.add(tuple(sorted((i.dataset.name, i.dataset.digest) for i in inputs)))
    assert len(seen) == 1, "every trial on the same split logs the same digests"
    (digests,) = seen
    assert len({d for _, d in digests}) == 3, "train (images + labels), test and pool (images) differ"


def report_files(tracker: Tracker, run_id: str, path: str = "report") -> list[str]:
    found = []
    for item in tracker.client.list_artifacts(run_id, path):
        found += report_files(tracker, run_id, item.path) if item.is_dir else [item.path]
    return sorted(found)


def test_the_report_is_the_parents_artifacts_and_logging_it_again_replaces_it(ran_twice, tmp_path):
    results, tracker = ran_twice
    (parent,) = parent_runs(tracker)
    after_run = report_files(tracker, parent.info.run_id)
    assert "report/index.html" in after_run and "report/accuracy.csv" in after_run
    assert any(f.endswith(".png") for f in after_run) and any(f.endswith(".svg") for f in after_run)
    stale = tmp_path / "stale.md"
    stale.write_text("a table an older report made")
    tracker.client.log_artifact(parent.info.run_id, str(stale), "report")
    for _ in range(2):
        done = albench_here("report", "--results", results, "--mlflow")
        assert done.returncode == 0, done.stderr
        assert "logged the report as artifacts of grid 'tracked''s parent run" in done.stdout
        assert report_files(tracker, parent.info.run_id) == after_run, "one report, the latest, nothing stale"
    assert len(parent_runs(tracker)) == 1


def test_report_to_mlflow_without_a_tracked_grid_says_what_to_do(tmp_path):
    grid, results = tmp_path / "grid.yaml", tmp_path / "results"
    grid.write_text(GRID)
    assert albench_here("run", grid, "--results", results, "--in-process", "--tracking-uri", "none").returncode == 0
    done = albench_here("report", "--results", results, "--mlflow")
    assert done.returncode == 2
    assert "no MLflow store in" in done.stderr and "give --tracking-uri where the grid was tracked" in done.stderr


def test_the_runs_store_the_pool_labels_and_the_report_names_each_picks_class(ran_twice, digits):
    import numpy as np

    from experiments.report.picks import dataset_key_of, pick_counts
    from experiments.results import labels_file, read_rounds

    results, tracker = ran_twice
    rounds = read_rounds(results)
    stored = np.load(labels_file(results, dataset_key_of(rounds["spec"].iloc[0])))
    assert np.array_equal(stored, digits.train_labels.numpy())
    tidy, absent = pick_counts(rounds, results)
    assert absent == []
    picked = rounds[rounds["selected"].map(len) > 0]
    assert len(picked.groupby(["strategy", "round"])) == 4
    for (strategy, round_), same in picked.groupby(["strategy", "round"]):  # against the dataset's own labels
        counts = [np.bincount(digits.train_labels.numpy()[list(s)], minlength=10) for s in same["selected"]]
        got = tidy[(tidy["strategy"] == strategy) & (tidy["round"] == round_)].sort_values("class")
        assert len(same) == 2 and got["count"].tolist() == pytest.approx(np.mean(counts, axis=0).tolist())
    (parent,) = parent_runs(tracker)
    files = report_files(tracker, parent.info.run_id)
    for name in ("critical_difference", "penalty", "class_balance"):
        assert f"report/{name}.csv" in files and f"report/{name}.md" in files
    assert "report/critical_difference.png" in files and "report/class_balance_digits_tiny.svg" in files


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_trials_nested_under_the_grid_and_the_report_in_a_real_browser(ran_twice, tmp_path):
    """`docs/mlflow_view.py`: `mlflow ui` on loopback, headless Chromium, the runs table and the artifacts."""
    import subprocess
    import sys

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "docs"))
    try:
        import mlflow_view
    finally:
        sys.path.remove(str(REPO / "docs"))
    if mlflow_view.chromium() is None:
        pytest.skip("no Chromium: `apt-get install chromium` (.ci/run installs it where it may)")
    pytest.importorskip("playwright", reason="the dev extra installs playwright (make test does)")
    results, _ = ran_twice
    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / "mlflow_view.py"), "--results", str(results), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "collapsed rows ['grid: tracked']" in done.stdout
    assert "expanded: 4 trials under 'grid: tracked'" in done.stdout
    assert "index.html True" in done.stdout
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert shots == ["mlflow-landing.png", "mlflow-nested-runs.png", "mlflow-parent-artifacts.png"]


@pytest.mark.parametrize("fails", ["after_create", "in_create"])
def test_a_run_creation_cut_off_by_the_server_is_finished_on_retry_never_made_twice(tmp_path, fails):
    """The server goes away in the middle of making a trial's run: after MLflow made it (its params not logged yet),
    or inside the creating call itself, having made it but with the answer lost. The retry finishes that run."""
    from tests.conftest import tiny_spec

    tracker = Tracker(default_tracking_uri(tmp_path), "cut-off", tmp_path)
    spec = tiny_spec("entropy", 0)
    client, real_create, real_batch = tracker.client, tracker.client.create_run, tracker.client.log_batch

    def create_then_lose_the_answer(*args, **kwargs):
        real_create(*args, **kwargs)
        raise ConnectionError("the server went away")

    def refused(*args, **kwargs):
        raise ConnectionError("the server went away")

    client.create_run = create_then_lose_the_answer if fails == "in_create" else real_create
    client.log_batch = refused if fails == "after_create" else real_batch
    with pytest.raises(ConnectionError):
        tracker.run_for(spec, "sha")
    client.create_run, client.log_batch = real_create, real_batch
    run_id = tracker.run_for(spec, "sha")
    (run,) = trial_runs(tracker)
    assert run.info.run_id == run_id and run.data.params["strategy.name"] == "entropy"
    assert tracker.run_for(spec, "sha") == run_id and len(trial_runs(tracker)) == 1
