"""`albench plan`: a grid's cost from its specs alone, counted as a user would by hand."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.plan.cost import grid_cost, trial_counts, trial_work
from orchestrator.plan.describe import format_cost
from orchestrator.plan.grid import parse_grid

GRID = """
name: cost
datasets: [digits]
model: small_cnn
regimes:
  r: {initial: 20, query: 30, subset: 100, budget: 80}
strategies: [random, bait]
seeds: [0, 1]
train: {epochs: 5}
"""


def test_counts_are_the_hand_computed_ones():
    costs = {c.strategy: c for c in grid_cost(parse_grid(yaml.safe_load(GRID)))}
    # labeled counts 20, 50, 80: 3 rounds, 2 queries; training 5 x (20 + 50 + 80) per trial
    assert costs["random"].trials == 2 and costs["random"].rounds == 6
    assert costs["random"].train_images == 2 * 5 * 150
    assert costs["random"].scored_images == 2 * (100 + 100)  # the subset only
    assert costs["bait"].scored_images == 2 * ((100 + 20) + (100 + 50))  # the subset plus the labeled set


def test_hours_follow_the_given_throughput(tmp_path, capsys):
    text = format_cost(parse_grid(yaml.safe_load(GRID)), train_images_per_second=1.5)
    shared = 3000 - 2 * 5 * 20  # each seed's two cross-entropy trials train round 0 (20 images, 5 epochs) once
    assert "train hours" in text and f"{shared / 1.5 / 3600:.1f}" in text
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    assert main(["plan", str(path)]) == 0
    assert "grid 'cost': 4 trials, 12 rounds" in capsys.readouterr().out


def test_trial_work_orders_trials_and_counts_only_the_rounds_left():
    grid = parse_grid(yaml.safe_load(GRID.replace("[random, bait]", "[random, entropy, ent_gradnorm, bait]")))
    by_strategy = {t.strategy.name: t for t in grid.trials() if t.seed == 0}
    work = {name: trial_work(spec) for name, spec in by_strategy.items()}
    assert work["random"] == 5 * 150  # training only: random's query costs nothing
    assert work["entropy"] == pytest.approx(5 * 150 + 200 / 3)  # two queries over the 100-image subset, a forward each
    assert sorted(work, key=work.get, reverse=True) == ["bait", "ent_gradnorm", "entropy", "random"]
    # resumed after round 1 (20 labeled): rounds at 50 and 80 remain, one query
    assert trial_work(by_strategy["entropy"], from_round=1) == pytest.approx(5 * 130 + 100 / 3)
    # no subset: a query maps the whole unlabeled pool, counted when the pool size is known
    whole = parse_grid(yaml.safe_load(GRID.replace("subset: 100, ", ""))).trials()[0]
    assert trial_counts(whole) == (750, 0) and trial_counts(whole, pool_size=1000) == (750, 980 + 950)


def test_the_plan_trains_each_round0_group_once():
    """random, entropy and margin share each seed's round 0; lplgrad trains its module from round 0 on."""
    grid = parse_grid(yaml.safe_load(GRID.replace("[random, bait]", "[random, entropy, margin, lplgrad]")))
    lines = format_cost(grid).splitlines()
    total = next(line for line in lines if line.startswith("total")).split()
    per_trial = 5 * (20 + 50 + 80)
    saved = 2 * 2 * 5 * 20  # per seed: 3 cross-entropy trials, 2 of them start from the first one's round 0
    assert total[3] == f"{8 * per_trial - saved:,}"
    assert any(f"(4 groups for 8 trials): the total trains {saved:,} image-passes fewer" in line for line in lines)


def test_the_plan_lists_the_fused_groups(tmp_path, capsys):
    grid = yaml.safe_load(GRID) | {"strategies": ["random", "entropy", "lplgrad"], "resources": {"fuse": 2}}
    path = tmp_path / "fused.yaml"
    path.write_text(yaml.safe_dump(grid))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fused (resources.fuse: 2): 3 groups for 6 trials" in out
    # the plan's order, longest first: lplgrad (its module's queries cost more) fuses with itself (its own objective)
    assert "group 1: digits/r/lplgrad/seed0 + digits/r/lplgrad/seed1" in out
    assert "group 2: digits/r/random/seed0 + digits/r/entropy/seed0" in out
    assert "group 3: digits/r/random/seed1 + digits/r/entropy/seed1" in out
    assert "fused" not in format_cost(parse_grid(yaml.safe_load(GRID)))  # fuse: 1, nothing to list
