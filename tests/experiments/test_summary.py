"""The mean ± std table: exact cells from known rows."""

import pandas as pd

from experiments.summary import accuracy_table, format_accuracy_tables


def _rows():
    rows = []
    for strategy, accuracies in (("lplgrad", [0.80, 0.90]), ("random", [0.70, 0.72])):
        for seed, accuracy in enumerate(accuracies):
            rows.append(
                {
                    "dataset": "d",
                    "regime": "r",
                    "strategy": strategy,
                    "seed": seed,
                    "n_labeled": 100,
                    "test_accuracy": accuracy,
                }
            )
    rows.append({"dataset": "d", "regime": "r", "strategy": "random", "seed": 0, "n_labeled": 50, "test_accuracy": 0.5})
    return pd.DataFrame(rows)


def test_cells_are_mean_and_sample_std_in_percent_and_one_seed_shows_its_mean_alone():
    table = accuracy_table(_rows())
    assert table.loc[("d", "r", "lplgrad"), "100"] == "85.0 ± 7.1"  # std of (80, 90) with ddof=1: 7.07
    assert table.loc[("d", "r", "random"), "100"] == "71.0 ± 1.4"
    assert table.loc[("d", "r", "random"), "50"] == "50.0"
    assert table.loc[("d", "r", "lplgrad"), "50"] == ""


def test_text_tables_order_strategies_by_final_accuracy_and_say_how_many_seeds():
    text = format_accuracy_tables(_rows())
    assert "d / r: test accuracy %, mean ± std over 2 seeds" in text  # seeds per strategy
    assert text.index("lplgrad") < text.index("random")
    assert format_accuracy_tables(_rows().iloc[:0]) == "no completed rounds yet"
