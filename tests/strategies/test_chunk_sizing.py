"""`resources.score_batch_size: auto`: the sizing arithmetic, the setting, and that chunking never changes a pick."""

from __future__ import annotations

import pytest
import torch

from experiments.datasets import load_dataset
from orchestrator.engine.trial import run_trial
from orchestrator.plan.grid import parse_grid
from strategies.chunk_sizing import MAX_CHUNK, ChunkSizer, chunk_that_fits
from tests.conftest import tiny_spec
from tests.strategies.test_settings import grid_with


def test_a_chunk_fills_most_of_the_headroom_in_whole_steps_and_never_shrinks_below_the_first():
    mib = 2**20
    assert chunk_that_fits(1 * mib, 1000 * mib, 256) == 768  # 0.8 x 1000 = 800 images, down to a multiple of 64
    assert chunk_that_fits(1 * mib, 100 * mib, 256) == 256  # the first size has already run: keep it
    assert chunk_that_fits(1.0, 10.0 * 2**40, 256) == MAX_CHUNK
    assert chunk_that_fits(0.0, 100 * mib, 256) == MAX_CHUNK  # nothing measured per image (all cached)


def test_on_a_cpu_auto_keeps_the_default_size():
    sizer = ChunkSizer(256, True, torch.device("cpu"))
    sizer.begin()
    sizer.end(256)
    assert sizer.size == 256 and not sizer.grow


def test_auto_is_a_resource_outside_the_trial_id_and_anything_else_is_refused():
    plain = parse_grid(grid_with("ent_gradnorm")).trials()[0]
    auto = parse_grid({**grid_with("ent_gradnorm"), "resources": {"score_batch_size": "auto"}})
    assert auto.resources.score_batch_size == "auto" and auto.trials()[0].trial_id == plain.trial_id
    with pytest.raises(Exception, match="score_batch_size"):
        parse_grid({**grid_with("ent_gradnorm"), "resources": {"score_batch_size": "big"}})


def test_a_trial_with_auto_chunks_labels_what_fixed_chunks_label():
    data = load_dataset("digits")
    spec = tiny_spec("ent_gradnorm")
    fixed = run_trial(spec, data, score_batch_size=16)
    auto = run_trial(spec, data, score_batch_size="auto")
    assert torch.equal(fixed.labeled_round, auto.labeled_round)
