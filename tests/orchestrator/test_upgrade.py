"""Upgrading albench loses nothing: a results folder written by commit 17506af (tests/fixtures/upgrade-17506af)
resumes under today's ids. The finished trial is not rerun, the partial one continues from its checkpoint and
ends with the records of an uninterrupted run; what cannot be carried over stops the run, named.

Float kernels differ between CPU models (AMD EPYC and Intel Xeon machines give different bits for the same
training), so the fixtures' numbers hold bit for bit only on the CPU model that computed them (17506af ran on an
AMD EPYC). On every machine these tests check what holds everywhere: the kept rows are unchanged, nothing is
rerun, the partial trial resumes from its checkpoint, and its new rounds are exactly what today's code computes
from that checkpoint on this machine (both sides computed here). The comparisons with 17506af's own numbers run
where the CPU model is the fixture's, and say why they are skipped elsewhere."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from experiments.datasets import load_dataset
from experiments.results import read_rounds, read_trial_rows, write_rounds
from experiments.specs import TrialSpec
from orchestrator.engine.checkpoint import load_checkpoint
from orchestrator.engine.trial import run_trial
from orchestrator.store.ledger import TrialEntry, TrialStatus, raw_entries, read_all
from tests.conftest import REPO
from tests.cpu import computed_here, cpu_kind
from tests.orchestrator.test_cli import albench_here

FIXTURE = REPO / "tests" / "fixtures" / "upgrade-17506af"
OLD = {"entropy": "a61c5db5550503ea", "lplgrad": "07d4c063f1632406"}
OLD_SHA = "17506af11e964d079ab79d1df59aafe131b611c1"
DETERMINISTIC = ["round", "n_labeled", "test_accuracy", "train_loss", "selected", "per_class_accuracy"]
FIXTURE_CPU = "AMD EPYC"  # the rows' device column: 'cpu: AMD EPYC x1'


def on_a_cpu_of_kind(*kinds: str) -> str:
    """The kind this machine shares with numbers computed on `kinds`; else skips their bit-for-bit comparison,
    saying so."""
    for kind in kinds:
        if computed_here(kind):
            return kind
    pytest.skip(
        f"the expected numbers were computed on {' and on '.join(repr(k) for k in kinds)} and this machine is "
        f"{cpu_kind()!r}: float kernels differ between kinds of CPU, so they hold bit for bit only there (the "
        "machine-independent checks ran)"
    )


@pytest.fixture
def old_results(tmp_path):
    """A copy of the folder 17506af wrote, somewhere else than where it was written (as when copied from a cluster)."""
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    return tmp_path / "results"


def run(results, *extra):
    return albench_here(
        "run", FIXTURE / "grid.yaml", "--results", results, "--in-process", "--tracking-uri", "none", *extra
    )


def deterministic(frame: pd.DataFrame) -> list[dict]:
    rows = frame.sort_values("round")[DETERMINISTIC].to_dict("records")
    return [{k: (list(v) if k in ("selected", "per_class_accuracy") else v) for k, v in row.items()} for row in rows]


def resumed_here(entry: TrialEntry) -> list[dict]:
    """The other side, computed on this machine: today's `run_trial` continuing the fixture's partial lplgrad trial
    from its old checkpoint in this process (1 thread, as the grid's cpus_per_trial sets); its rounds 3 to 5."""
    spec = TrialSpec.model_validate_json(entry.spec)
    state = load_checkpoint(str(FIXTURE / "results" / "checkpoints" / OLD["lplgrad"]), spec.trial_id, OLD["lplgrad"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        final = run_trial(spec, load_dataset("digits"), state=state)
    finally:
        torch.set_num_threads(threads)
    rows = [{k: v for k, v in r.to_dict().items() if k in DETERMINISTIC} for r in final.records[2:]]
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()} for row in rows]


def test_the_old_folder_is_what_17506af_wrote(old_results):
    entries = {e["label"].split("/")[2]: e for e in raw_entries(old_results)}
    assert {k: e["trial_id"] for k, e in entries.items()} == OLD
    assert (entries["entropy"]["status"], entries["entropy"]["rounds_done"]) == ("done", 5)
    assert (entries["lplgrad"]["status"], entries["lplgrad"]["rounds_done"]) == ("running", 2)
    assert all("spec_version" not in e and e["checkpoint"].startswith("/tmp/old/") for e in entries.values())
    assert set(read_rounds(old_results)["git_sha"]) == {OLD_SHA}


@pytest.mark.slow  # more than 2 s
def test_the_same_command_after_the_upgrade_reruns_nothing_and_resumes_the_partial_trial(old_results, tmp_path):
    status = albench_here("status", "--results", old_results)
    assert status.stdout.count("written by an older albench") == 2
    before = read_rounds(old_results)

    done = run(old_results)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "digits/tiny/entropy/seed0: carried over from albench 17506af" in done.stdout
    assert "digits/tiny/entropy/seed0: complete, skipped" in done.stdout, "the finished trial is not rerun"
    assert "resuming from its checkpoint after round 2" in done.stdout and "round 3/5" in done.stdout
    assert "round 1/5" not in done.stdout and "round 2/5" not in done.stdout, "no round is recomputed"

    after = read_rounds(old_results)
    entries = {e.label.split("/")[2]: e for e in read_all(old_results)}
    assert {k: e.legacy_id for k, e in entries.items()} == OLD
    assert all(e.status == TrialStatus.DONE and e.rounds_done == 5 and e.spec_version == 1 for e in entries.values())
    assert len(after) == 10 and not after.duplicated(["trial_id", "round"]).any()
    assert set(after["trial_id"]) == {e.trial_id for e in entries.values()}, "filed under today's ids"

    # the rows computed by 17506af are kept as they were: same numbers, same timings, same git sha
    for strategy in ("entropy", "lplgrad"):
        old = before[before["trial_id"] == OLD[strategy]].set_index("round")
        new = after[after["trial_id"] == entries[strategy].trial_id].set_index("round")
        kept = new.loc[old.index]
        assert (kept["git_sha"] == OLD_SHA).all() and kept["train_seconds"].tolist() == old["train_seconds"].tolist()
    resumed = after[after["trial_id"] == entries["lplgrad"].trial_id].set_index("round")
    assert (resumed.loc[[2, 3, 4], "git_sha"] != OLD_SHA).all(), "rounds 3 to 5 ran under today's code"
    new_rounds = deterministic(after[(after["trial_id"] == entries["lplgrad"].trial_id) & (after["round"] >= 2)])
    assert _same(new_rounds, resumed_here(entries["lplgrad"])), "exactly today's code, from the old checkpoint"

    again = run(old_results)
    assert again.stdout.count("complete, skipped") == 2 and "carried over" not in again.stdout
    pd.testing.assert_frame_equal(read_rounds(old_results), after)
    assert not (old_results / "checkpoints" / OLD["lplgrad"]).exists(), "the superseded old checkpoint is gone"


def test_a_trial_that_cannot_be_carried_over_stops_the_run_named_and_can_be_set_aside(old_results):
    rows = read_trial_rows(old_results, OLD["lplgrad"])
    spec = json.loads(rows[0]["spec"])
    spec["query"]["gradnorm_aggregate"] = "median"  # a value no albench accepts today
    write_rounds(old_results, [{**row, "spec": json.dumps(spec)} for row in rows])
    before = read_rounds(old_results)

    done = run(old_results)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr
    assert "1 trial(s) written by an older albench that cannot be carried over" in message
    assert f"digits/tiny/lplgrad/seed0 (trial {OLD['lplgrad']}, 2 of 5 rounds)" in message
    assert "aggregate" in message and "'median'" in message, "why"
    assert "--set-aside-old" in message and "Nothing was run" in message, "what to do"
    assert "round" not in done.stdout.replace("rounds)", ""), "nothing ran"
    remaining = read_rounds(old_results)
    assert len(remaining[remaining["trial_id"] == OLD["lplgrad"]]) == 2, "the old rows are still there"
    assert len(remaining) == len(before)

    aside = run(old_results, "--set-aside-old")
    assert aside.returncode == 0, aside.stderr
    kept = old_results / "set-aside" / OLD["lplgrad"]
    assert {p.name for p in kept.iterdir()} == {f"{OLD['lplgrad']}.json", f"{OLD['lplgrad']}.parquet", OLD["lplgrad"]}
    assert "digits/tiny/lplgrad/seed0: running" in aside.stdout and "round 1/5" in aside.stdout


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)  # NaN: a class absent from the test set


def test_on_the_fixtures_cpu_the_upgraded_grid_ends_as_17506af_ran_it_uninterrupted(old_results):
    """Every record after the upgrade equals the one 17506af computed in the same grid uninterrupted, bit for bit."""
    on_a_cpu_of_kind(FIXTURE_CPU)
    done = run(old_results)
    assert done.returncode == 0, done.stderr
    after = read_rounds(old_results)
    uninterrupted = json.loads((FIXTURE / "uninterrupted.json").read_text())
    for entry in read_all(old_results):
        strategy = entry.label.split("/")[2]
        assert deterministic(after[after["trial_id"] == entry.trial_id]) == uninterrupted[strategy]["rounds"]


@pytest.mark.slow
def test_every_strategy_computes_bit_for_bit_what_17506af_computed(tmp_path):
    """Grids run by 17506af (all strategies but bait, which takes 100 s a trial here; non-default settings in grid
    b, given with that version's names) give the same records under today's code, on each kind of CPU that 17506af
    ran them on (its AMD EPYC, and since make_records_17506af.py the Intel Xeon kind of these machines)."""
    from orchestrator.plan.grid import parse_grid
    from orchestrator.run.local import run_grid_locally
    from orchestrator.store.bookkeeper import Bookkeeper

    fixture = json.loads((REPO / "tests" / "fixtures" / "records-17506af.json").read_text())
    by_kind = {fixture["cpu_model"]: fixture["records"], **{e["cpu"]: e["records"] for e in fixture["on_other_cpus"]}}
    expected = by_kind[on_a_cpu_of_kind(*by_kind)]
    for name, grid in fixture["grids"].items():
        run_grid_locally(parse_grid(grid), Bookkeeper(tmp_path / name, None), report=lambda line: None)
    frame = pd.concat([read_rounds(tmp_path / name) for name in fixture["grids"]])
    ours = {
        f"{experiment}/{strategy}/seed{seed}": part.sort_values("round")
        for (experiment, strategy, seed), part in frame.groupby(["experiment", "strategy", "seed"])
    }
    assert sorted(ours) == sorted(expected)
    for label, rounds in expected.items():
        got = [
            {k: (list(v) if k in ("selected", "per_class_accuracy") else v) for k, v in row.items()}
            for row in ours[label][list(rounds[0])].to_dict("records")
        ]
        assert _same(got, rounds), label


@pytest.mark.slow  # more than 2 s
def test_the_old_trials_mlflow_runs_are_kept_and_found_by_their_new_ids(old_results):
    """17506af tagged each trial's run with its old id; the ledger kept the run's id. The carry-over retags the
    runs, logs only the rounds they lack, and creates no second run for a trial."""
    from mlflow.tracking import MlflowClient

    from orchestrator.store.ledger import entry_path
    from orchestrator.store.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(old_results))
    experiment = client.create_experiment("upgrade-fixture")
    for old in raw_entries(old_results):  # the runs as 17506af left them: tagged, with their rounds so far
        run = client.create_run(experiment, tags={"trial_id": old["trial_id"]}, run_name=old["label"])
        for step in [20, 40, 60, 80, 100][: old["rounds_done"]]:
            client.log_metric(run.info.run_id, "test_accuracy", 0.5, step=step)
        entry_path(old_results, old["trial_id"]).write_text(json.dumps({**old, "mlflow_run_id": run.info.run_id}))

    done = albench_here("run", FIXTURE / "grid.yaml", "--results", old_results, "--in-process")
    assert done.returncode == 0, done.stderr
    runs = [r for r in client.search_runs([experiment]) if "trial_id" in r.data.tags]
    (parent,) = [r for r in client.search_runs([experiment]) if "trial_id" not in r.data.tags]
    entries = {e.legacy_id: e for e in read_all(old_results)}
    assert len(runs) == 2, "no second run for a carried-over trial"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}, "old runs join the grid's parent"
    for run in runs:
        entry = entries[run.data.tags["legacy_trial_id"]]
        assert run.data.tags["trial_id"] == entry.trial_id and run.info.run_id == entry.mlflow_run_id
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")]
        assert sorted(steps) == [20, 40, 60, 80, 100] and run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.ray
def test_the_same_upgrade_through_ray_resumes_the_partial_trial_in_an_actor(node_with_2_cpus, old_results):
    from orchestrator.plan.grid import load_grid
    from orchestrator.run.ray_runner import run_grid_on_ray
    from orchestrator.store.bookkeeper import Bookkeeper

    lines = []
    entries = run_grid_on_ray(load_grid(FIXTURE / "grid.yaml"), Bookkeeper(old_results, None), report=lines.append)
    assert "1 of 2 trials already complete; 1 to run" in lines
    assert {e.status for e in entries} == {TrialStatus.DONE}
    after, before = read_rounds(old_results), read_rounds(FIXTURE / "results")
    for entry in entries:  # the rows 17506af computed are kept as they were
        old = before[before["trial_id"] == entry.legacy_id]
        kept = after[(after["trial_id"] == entry.trial_id) & after["round"].isin(old["round"])]
        assert _same(deterministic(kept), deterministic(old)), entry.label
    lplgrad = after[after["strategy"] == "lplgrad"].set_index("round")["git_sha"]
    assert (lplgrad.loc[[0, 1]] == OLD_SHA).all() and (lplgrad.loc[[2, 3, 4]] != OLD_SHA).all()
    (partial,) = [e for e in entries if e.label.endswith("lplgrad/seed0")]
    new_rounds = deterministic(after[(after["trial_id"] == partial.trial_id) & (after["round"] >= 2)])
    assert _same(new_rounds, resumed_here(partial)), "the actor computed exactly today's code from the checkpoint"
