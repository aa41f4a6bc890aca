"""Results folders written by albench at c691cd3 (before the plan of jobs: a separate Tune run of round-0 fits,
one Tune checkpoint format per unit kind), interrupted mid-grid, resume under today's albench with nothing
recomputed: every row they hold stays as it is, timings included, and the rest completes to what an
uninterrupted run of today's albench computes (tests/fixtures/make_c691cd3.py made them). That last comparison is
bit for bit, so it holds only on the kind of CPU that made the fixture (its cpu.txt); elsewhere the folders must
still complete, every row once, the old rows as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from experiments.results import read_rounds
from orchestrator.plan.grid import load_grid
from orchestrator.run.local import run_grid_locally
from orchestrator.store.bookkeeper import Bookkeeper
from tests.cpu import computed_here
from tests.orchestrator.readers import records

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "c691cd3"
MADE_HERE = computed_here((FIXTURE / "cpu.txt").read_text().strip())


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE / name, tmp_path / name))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pd.DataFrame | None:
    if not MADE_HERE:
        return None
    folder = tmp_path_factory.mktemp("uninterrupted")
    run_grid_locally(load_grid(FIXTURE / "grid.yaml"), Bookkeeper(folder, None), report=lambda line: None)
    return records(folder)


def _resumed_exactly(folder: Path, before: pd.DataFrame, uninterrupted: pd.DataFrame | None) -> None:
    after = read_rounds(folder)
    assert len(after) == 6 and not after.duplicated(["trial_id", "round"]).any()
    kept = after.set_index(["trial_id", "round"]).loc[before.set_index(["trial_id", "round"]).index]
    pd.testing.assert_frame_equal(kept.reset_index(), before, check_like=True)  # timings too: nothing recomputed
    if MADE_HERE:
        pd.testing.assert_frame_equal(records(folder), uninterrupted)


@pytest.mark.slow
def test_an_in_process_folder_of_c691cd3_resumes_its_interrupted_trial_from_round_3(tmp_path, uninterrupted):
    folder = _copy("in-process", tmp_path)
    before = read_rounds(folder)
    assert len(before) == 5  # random: 3 of 3; entropy: 2 of 3, interrupted
    lines: list[str] = []
    entries = run_grid_locally(load_grid(FIXTURE / "grid.yaml"), Bookkeeper(folder, None), report=lines.append)
    assert {e.status for e in entries} == {"done"}
    assert "1 of 2 trials already complete; 1 to run" in lines
    assert any("resuming from its checkpoint after round 2" in line for line in lines)
    assert not any("trained once" in line for line in lines) and sum("round 3/3" in line for line in lines) == 1
    _resumed_exactly(folder, before, uninterrupted)


@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_folder_of_c691cd3_resumes_from_its_tune_checkpoint_and_its_stored_fit(
    node_with_2_cpus, tmp_path, uninterrupted
):
    from orchestrator.run.ray_runner import run_grid_on_ray

    folder = _copy("ray", tmp_path)
    before = read_rounds(folder)
    assert len(before) == 2  # entropy: 2 of 3 (killed); random: its fit filed, no round filed
    lines: list[str] = []
    entries = run_grid_on_ray(load_grid(FIXTURE / "grid.yaml"), Bookkeeper(folder, None), report=lines.append)
    assert {e.status for e in entries} == {"done"}, lines
    assert "0 of 2 trials already complete; 2 to run" in lines, "the stored round-0 fit: no fit job"
    assert not any("trained once" in line for line in lines)
    _resumed_exactly(folder, before, uninterrupted)
