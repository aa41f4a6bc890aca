"""`albench report` on fixture Parquet files whose expected cells are worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from experiments.errors import AlbenchError
from experiments.records import RoundRecord
from experiments.report import build_report
from experiments.results import rows_of, write_rounds
from experiments.specs import RegimeSpec
from tests.conftest import trial_spec

REGIME = RegimeSpec(initial=10, query=10, subset=100, budget=30)  # rounds at 10, 20, 30 labeled images
CURVES = {  # (strategy, seed) -> accuracy at 10, 20, 30
    ("lplgrad", 0): [0.5, 0.7, 0.9],
    ("lplgrad", 1): [0.6, 0.8, 1.0],
    ("random", 0): [0.4, 0.5, 0.6],
    ("random", 1): [0.6, 0.7, 0.8],
    ("ent_gradnorm", 0): [0.5, 0.6, 0.8],  # seed 1 missing: fewer seeds than planned
}


FITS = {  # (strategy, seed) -> train accuracy at 10, 20, 30
    ("lplgrad", 0): [0.6, 0.8, 1.0],
    ("lplgrad", 1): [0.7, 0.9, 1.0],
    ("random", 0): [0.5, 0.6, 0.7],
    ("random", 1): [0.7, 0.8, 0.9],
    ("ent_gradnorm", 0): [0.6, 0.7, 0.95],
}


def write_trial(results, strategy, seed, accuracies, device="cpu: test"):
    spec = trial_spec("digits", "small_cnn", REGIME, strategy, seed)
    fits = FITS.get((strategy, seed), [None] * len(accuracies))
    records = [
        RoundRecord(r, 10 * (r + 1), a, (a,) * 10, 0.1, (), 1.0 + seed, 0.0, 0.5, "sha", device, fits[r])
        for r, a in enumerate(accuracies)
    ]
    write_rounds(results, rows_of(spec, records))
    return spec


@pytest.fixture
def results(tmp_path):
    for (strategy, seed), accuracies in CURVES.items():
        write_trial(tmp_path, strategy, seed, accuracies)
    return tmp_path


def cell(table, row, column):
    return table.display.loc[row, column]


def test_accuracy_table_cells_seeds_and_best(results, tmp_path):
    report = build_report(results, tmp_path / "out")
    accuracy = report.tables[0]
    assert cell(accuracy, "lplgrad", "digits/test @30") == "95.0 ± 7.1"  # mean of 90, 100; sample std 7.07
    assert cell(accuracy, "random", "digits/test @30") == "70.0 ± 14.1"
    assert cell(accuracy, "ent_gradnorm", "digits/test @30") == "80.0 (1/2)"  # one seed of the two planned
    assert accuracy.best.loc["lplgrad", "digits/test @30"] and not accuracy.best.loc["random", "digits/test @30"]
    assert "ent_gradnorm at digits/test @30: 1 of 2 planned seeds" in accuracy.notes
    assert list(accuracy.display.index) == ["ent_gradnorm", "random", "lplgrad"]  # the paper's order
    markdown = (tmp_path / "out" / "accuracy.md").read_text()
    assert "**95.0 ± 7.1**" in markdown
    assert r"\textbf{95.0 $\pm$ 7.1}" in (tmp_path / "out" / "accuracy.tex").read_text()
    at = build_report(results, tmp_path / "at", at=[20]).tables[0]
    assert list(at.display.columns) == ["digits/test @20"]
    with pytest.raises(AlbenchError, match="--at 999: no results at those labeled counts; available: 10, 20, 30"):
        build_report(results, tmp_path / "none", at=[999])


def test_aulc_ranks_and_paired_comparison(results, tmp_path):
    tables = {t.name: t for t in build_report(results, tmp_path / "out").tables}
    # AULC = trapezoids / (30 - 10): lplgrad (14/20, 16/20), random (10/20, 14/20), ent_gradnorm 12.5/20
    assert cell(tables["aulc"], "lplgrad", "digits/test") == "0.750 ± 0.071"
    assert cell(tables["aulc"], "random", "digits/test") == "0.600 ± 0.141"
    assert cell(tables["aulc"], "ent_gradnorm", "digits/test") == "0.625 (1/2)"
    assert tables["ranks"].data.set_index("strategy")["average rank"].to_dict() == {
        "lplgrad": 1,
        "ent_gradnorm": 2,
        "random": 3,
    }
    paired = tables["paired"].display
    row = paired.loc[("digits/test", "lplgrad")]
    assert row["win/tie/loss"] == "2/0/0" and row["AULC difference"] == "0.150 ± 0.071"
    # differences (0.2, 0.1): t = 0.15 / (0.0707 / sqrt 2) = 3 with 1 degree of freedom (Cauchy): p = 1 - 2 atan(3) / pi
    assert float(row["paired t-test p"]) == pytest.approx(1 - 2 * math.atan(3) / math.pi, abs=1e-3)
    assert paired.loc[("digits/test", "ent_gradnorm")]["paired t-test p"] == "n/a"


def test_train_accuracy_by_count_and_the_underfit_cells_named(results, tmp_path):
    table = {t.name: t for t in build_report(results, tmp_path / "out").tables}["train_accuracy"]
    assert cell(table, "lplgrad", "digits/test @20") == "85.0 ± 7.1"  # mean of 80, 90
    assert cell(table, "ent_gradnorm", "digits/test @30") == "95.0"
    assert table.notes == [
        "UNDERFIT: 7 of 9 (strategy, labeled count) cells train below 90%: an active-learning comparison on "
        "underfit models is not meaningful (train longer: train.epochs)",
        "digits/test ent_gradnorm: at 10 (60.0 %), 20 (70.0 %)",
        "digits/test lplgrad: at 10 (65.0 %), 20 (85.0 %)",
        "digits/test random: at 10 (60.0 %), 20 (70.0 %), 30 (80.0 %)",
    ]
    relaxed = {t.name: t for t in build_report(results, tmp_path / "o2", min_train_accuracy=0.5).tables}
    assert relaxed["train_accuracy"].notes == ["every round trained to at least 50% train accuracy (mean over seeds)"]


def test_side_by_side_ranks_paired_differences_and_the_seed_spread(results, tmp_path):
    table = {t.name: t for t in build_report(results, tmp_path / "out").tables}["side_by_side"].display
    lplgrad = table.loc[("digits/test", "lplgrad")]
    # AULC: lplgrad (0.70, 0.80), random (0.50, 0.70), ent_gradnorm 0.625 (seed 0 only)
    assert (lplgrad["rank"], lplgrad["AULC %"]) == (1, "75.0 ± 7.1")
    # against random, per seed (0.20, 0.10): mean 0.15 > their std 0.071, so beyond the seeds' spread
    assert (lplgrad["vs random (AULC)"], lplgrad["beyond spread (random)"]) == ("+15.0 ± 7.1", "yes")
    # against ent_gradnorm only seed 0 pairs: 0.700 - 0.625
    assert (lplgrad["vs ent_gradnorm (AULC)"], lplgrad["beyond spread (ent_gradnorm)"]) == ("+7.5", "n/a")
    assert table.loc[("digits/test", "random")]["vs ent_gradnorm (AULC)"] == "-12.5"
    assert table.loc[("digits/test", "random")]["vs random (AULC)"] == ""
    assert list(table["rank"]) == [1, 2, 3] and set(table["paper rank"]) == {""}  # no Table III for digits


def test_the_papers_table_iii_ranking():
    from experiments.report.versus import paper_ranks

    # CIFAR-10 means at 3k/6k/9k: lplgrad 82.9, learning_loss 82.3, ent_gradnorm 80.6, random 80.57,
    # entropy 79.4, coreset 77.2
    assert paper_ranks("cifar10") == {
        "lplgrad": 1,
        "learning_loss": 2,
        "ent_gradnorm": 3,
        "random": 4,
        "entropy": 5,
        "coreset": 6,
    }


def test_ablation_cost_and_paper_tables(results, tmp_path):
    tables = {t.name: t for t in build_report(results, tmp_path / "out").tables}
    ablation = tables["ablation"].display
    assert list(ablation.index) == [("digits/test", "1/3"), ("digits/test", "1/2"), ("digits/test", "all")]
    final = ablation.loc[("digits/test", "all")]
    assert (final["lplgrad"], final["ent_gradnorm"], final["difference (paired)"]) == ("95.0 ± 7.1", "80.0", "10.0")
    assert ablation.loc[("digits/test", "1/2")]["labeled"] == "10"  # the largest count <= half the budget (15)
    cost = tables["cost"]
    assert cell(cost, "lplgrad", "digits train s") == "4.5 ± 2.1"  # trials of 3 x 1 s and 3 x 2 s
    assert cell(cost, "lplgrad", "digits query s") == "1.5 ± 0.0"
    assert "digits: measured on cpu: test" in cost.notes
    assert tables["paper"].display.empty and "none of these results" in tables["paper"].notes[0]
    assert "| index |" not in (tmp_path / "out" / "paper.md").read_text()


def test_paper_numbers_appear_beside_ours_in_a_matching_setting(tmp_path):
    high = RegimeSpec(initial=1000, query=1000, subset=25000, budget=10000)
    for seed, accuracy in ((0, 0.70), (1, 0.72)):
        spec = trial_spec("cifar10", "resnet18", high, "lplgrad", seed)
        records = [
            RoundRecord(r, 1000 * (r + 1), accuracy, (), 0.1, (), 1.0, 0.0, 1.0, "sha", "gpu") for r in range(10)
        ]
        write_rounds(tmp_path, rows_of(spec, records))
    paper = {t.name: t for t in build_report(tmp_path, tmp_path / "out").tables}["paper"].display
    assert paper.loc[("cifar10", "3000", "lplgrad")].to_dict() == {
        "ours": "71.0 ± 1.4",
        "paper": "72.4 ± 1.1",
        "ours − paper": "-1.4",
    }


def test_figures_are_valid_images_of_the_expected_size(results, tmp_path):
    report = build_report(results, tmp_path / "out")
    assert sorted(report.figures) == [
        "critical_difference.png",
        "critical_difference.svg",
        "curve_digits_test.png",
        "curve_digits_test.svg",
        "per_class_lplgrad_digits_test.png",
        "per_class_lplgrad_digits_test.svg",
    ], "no class histogram: these rows were written without the runners' stored labels"
    for name in ("curve_digits_test.png", "per_class_lplgrad_digits_test.png", "critical_difference.png"):
        with Image.open(tmp_path / "out" / name) as image:
            image.verify()
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.size[0] == 640
            assert image.size[1] == 480 or name.startswith("critical")
    assert (tmp_path / "out" / "curve_digits_test.svg").read_text().lstrip().startswith("<?xml")
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<img src='curve_digits_test.png'" in page and "<b>95.0 ± 7.1</b>" in page


def test_partial_results_say_what_is_missing(results, tmp_path):
    write_trial(results, "random", 2, [0.5])  # 1 of 3 rounds
    (results / "trials").mkdir()
    (results / "trials" / "x.json").write_text(
        json.dumps({"trial_id": "x", "label": "digits/test/lplgrad/seed3", "status": "pending"})
    )
    report = build_report(results, tmp_path / "out")
    assert "digits/test/random/seed2: 1 of 3 rounds" in report.missing
    assert "digits/test/lplgrad/seed3: no rounds yet (pending)" in report.missing
    assert cell(report.tables[0], "lplgrad", "digits/test @30") == "95.0 ± 7.1 (2/4)"  # seeds 0-3 planned
    assert "Missing (results are partial)" in (tmp_path / "out" / "index.html").read_text()


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AlbenchError, match="no results in .*run a grid first"):
        build_report(tmp_path, tmp_path / "out")
