"""The one job body (`orchestrator.engine.execute`) on real digits: a lone trial run as a job (a fused group of
one) computes `run_trial`'s records, picks and final weights bit for bit, also from a round-0 fit and from a
checkpoint; a fit job hands its fit over; errors no retry can fix end at the output; and a fused step's GPU
meter holds the fused fit, not only the queries."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import orchestrator.engine.group
from orchestrator.engine.execute import execute
from orchestrator.engine.gpu import GpuUse
from orchestrator.engine.group import run_group
from orchestrator.engine.launch import Launch, MemberLaunch
from orchestrator.engine.records import Round0Fit, TrialState
from orchestrator.engine.round0 import round0_key
from orchestrator.engine.trial import fit_round0, run_trial
from tests.conftest import tiny_spec

AUGMENTED = {"augment": True, "crop_padding": 1}
TIMINGS = ("train_seconds", "eval_seconds", "query_seconds", "git_sha")


@dataclass
class CollectingOutput:
    """A backend's side of `execute` that keeps everything in memory."""

    start_from: TrialState | None = None
    fit: Round0Fit | None = None

    def __post_init__(self):
        self.steps: list[list[TrialState]] = []
        self.errors: dict[str, str] = {}

    def resume(self, member):
        return self.start_from

    def step(self, states):
        self.steps.append([_copy(s) for s in states])

    def fitted(self, fit):
        self.fit = fit

    def failed(self, errors):
        self.errors.update(errors)


def _copy(state: TrialState) -> TrialState:
    weights = {n: {k: v.clone() for k, v in w.items()} for n, w in state.weights.items()}
    return TrialState(state.trial_id, state.labeled_round.clone(), weights, list(state.records), dict(state.extra))


@pytest.fixture(autouse=True)
def one_thread():
    """A job sets torch's threads from its bundle (1 CPU here), as a worker does: the oracle runs at the same count
    (it changes the order of float sums); the test process gets its own back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _launch(kind, *specs, round0_from=None, bundle=None) -> Launch:
    members = tuple(MemberLaunch(spec=s, round0_key=round0_key(s), round0_from=round0_from) for s in specs)
    return Launch(
        job_id=specs[0].trial_id,
        kind=kind,
        members=members,
        dataset_key=specs[0].dataset.model_dump_json(),
        bundle=bundle or {"CPU": 1},
        score_batch_size=256,
    )


def _same_trial(job: TrialState, oracle: TrialState) -> None:
    """Every field of every record but the timings, the labeling history and every weight, bit for bit."""
    assert len(job.records) == len(oracle.records) == 4
    for a, b in zip(job.records, oracle.records, strict=True):
        left, right = a.to_dict(), b.to_dict()
        for key in TIMINGS:
            left.pop(key), right.pop(key)
        assert left == right
    assert torch.equal(job.labeled_round, oracle.labeled_round)
    assert job.weights.keys() == oracle.weights.keys()
    for name, weights in oracle.weights.items():
        assert weights.keys() == job.weights[name].keys()
        assert all(torch.equal(job.weights[name][k], v) for k, v in weights.items()), name


@pytest.mark.parametrize("strategy", ["entropy", "lplgrad"])
def test_a_lone_trial_as_a_job_equals_run_trial_bit_for_bit(digits, strategy):
    spec = tiny_spec(strategy, 0, **AUGMENTED)
    oracle = run_trial(spec, digits)
    output = CollectingOutput()
    execute(_launch("trials", spec), digits, output, "cpu")
    assert not output.errors and [len(s) for s in output.steps] == [1, 1, 1, 1]  # one step a round
    _same_trial(output.steps[-1][0], oracle)
    assert all(r.fused_with is None for r in output.steps[-1][0].records)


def test_a_lone_trial_job_from_a_round0_fit_and_from_a_checkpoint_equals_run_trial(digits, tmp_path):
    from orchestrator.engine.checkpoint import save_fit

    spec = tiny_spec("margin", 1, **AUGMENTED)
    fit_job = CollectingOutput()
    execute(_launch("fit", spec), digits, fit_job, "cpu")
    assert fit_job.fit is not None and fit_job.fit.key == round0_key(spec)
    save_fit(fit_job.fit, tmp_path / "fit")
    oracle = run_trial(spec, digits, round0=fit_round0(spec, digits, round0_key(spec)))
    from_fit = CollectingOutput()
    execute(_launch("trials", spec, round0_from=str(tmp_path / "fit")), digits, from_fit, "cpu")
    _same_trial(from_fit.steps[-1][0], oracle)
    assert from_fit.steps[0][0].records[0].round0_group == round0_key(spec)
    resumed = CollectingOutput(start_from=from_fit.steps[1][0])  # after round 2
    execute(_launch("trials", spec, round0_from=str(tmp_path / "fit")), digits, resumed, "cpu")
    assert len(resumed.steps) == 2
    _same_trial(resumed.steps[-1][0], oracle)


def test_errors_no_retry_can_fix_end_at_the_output(digits, tmp_path):
    spec = tiny_spec("entropy", 0)
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "fit.json").write_text("{not json")
    output = CollectingOutput()
    execute(_launch("trials", spec, round0_from=str(tmp_path / "fit")), digits, output, "cpu")
    assert list(output.errors) == [spec.trial_id] and not output.steps
    assert "CheckpointError" in output.errors[spec.trial_id] and "delete that folder" in output.errors[spec.trial_id]


class StandInMeter:
    """Stands in for `GpuMeter` on the CPU: says whether it is open, and reports a use of its own."""

    open = False
    entered = 0

    def __init__(self, device):
        self.result = GpuUse()

    def __enter__(self):
        StandInMeter.open, StandInMeter.entered = True, StandInMeter.entered + 1
        return self

    def __exit__(self, *exc):
        StandInMeter.open = False
        self.result = GpuUse(peak_allocated_mib=123.0, peak_reserved_mib=456.0, utilization=78.0)


def test_a_fused_steps_gpu_meter_holds_its_fused_fit_and_its_queries(digits, monkeypatch):
    seen = []
    real_fused, real_query = orchestrator.engine.group.train_round_fused, orchestrator.engine.group.query_round

    def fused_fit(*args, **kwargs):
        seen.append(("fit", StandInMeter.open))
        return real_fused(*args, **kwargs)

    def query(*args, **kwargs):
        seen.append(("query", StandInMeter.open))
        return real_query(*args, **kwargs)

    monkeypatch.setattr(orchestrator.engine.group, "meter_of", StandInMeter)
    monkeypatch.setattr(orchestrator.engine.group, "train_round_fused", fused_fit)
    monkeypatch.setattr(orchestrator.engine.group, "query_round", query)
    specs = [tiny_spec("entropy", 0), tiny_spec("random", 1)]
    states = run_group(specs, digits)
    assert seen.count(("fit", True)) == 4 and seen.count(("query", True)) == 8  # 4 rounds: 1 fused fit, 2 queries
    assert all(inside for _, inside in seen) and StandInMeter.entered == 4
    for state in states.values():
        assert [r.fused_with for r in state.records] == [2] * 4
        assert {(r.gpu_peak_allocated_mib, r.gpu_peak_reserved_mib, r.gpu_utilization) for r in state.records} == {
            (123.0, 456.0, 78.0)
        }
