"""The report's figures (PNG + SVG): learning curves with a ±std band, and per-class accuracy by round.

Each strategy keeps one colour in every figure of a report (its place in the report's strategy order picks it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.data import GROUP
from experiments.report.tables import PAPER_ORDER, strategy_order

FIGSIZE, DPI = (6.4, 4.8), 100  # 640 x 480 pixels


def colours(strategies) -> dict[str, tuple]:
    """One colour per strategy (variant label) of a report: the paper's six first, the rest in name order."""
    from matplotlib import colormaps

    names = PAPER_ORDER + sorted(set(strategies) - set(PAPER_ORDER))
    return {s: colormaps["tab10"](i) if i < 10 else colormaps["tab20b"]((i - 10) % 20) for i, s in enumerate(names)}


def _save(figure, out: Path, stem: str) -> list[str]:
    names = []
    for suffix in ("png", "svg"):
        figure.savefig(out / f"{stem}.{suffix}", dpi=DPI)
        names.append(f"{stem}.{suffix}")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return names


def learning_curves(rounds: pd.DataFrame, out: Path) -> list[str]:
    """One figure per (dataset, regime): accuracy vs labeled images, mean line and ±std band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written, colour_of = [], colours(rounds["strategy"].unique())
    for (dataset, regime), part in rounds.groupby(GROUP):
        figure, axes = plt.subplots(figsize=FIGSIZE)
        stats = part.groupby(["strategy", "n_labeled"])["test_accuracy"].agg(["mean", "std"]).reset_index()
        for strategy in strategy_order(stats["strategy"]):
            s = stats[stats["strategy"] == strategy]
            x, mean, std = s["n_labeled"].to_numpy(), 100 * s["mean"].to_numpy(), 100 * s["std"].fillna(0).to_numpy()
            axes.plot(x, mean, marker="o", markersize=3, label=strategy, color=colour_of[strategy])
            axes.fill_between(x, mean - std, mean + std, alpha=0.15, color=colour_of[strategy])
        axes.set(xlabel="labeled images", ylabel="test accuracy (%)", title=f"{dataset} / {regime}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        written += _save(figure, out, f"curve_{dataset}_{regime}")
    return written


def per_class_accuracy(rounds: pd.DataFrame, out: Path, strategy: str) -> list[str]:
    """Paper Fig. 8: per-class test accuracy by round for one strategy, mean over seeds, per (dataset, regime)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (dataset, regime), part in rounds[rounds["strategy"] == strategy].groupby(GROUP):
        by_round = part.groupby("n_labeled")["per_class_accuracy"].apply(
            lambda cells: np.nanmean(np.stack(cells.map(np.asarray)), axis=0)
        )
        matrix = 100 * np.stack(by_round.to_numpy()).T  # [classes, rounds]
        figure, axes = plt.subplots(figsize=FIGSIZE)
        image = axes.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        axes.set_xticks(range(len(by_round)), [str(n) for n in by_round.index], rotation=45, fontsize=7)
        axes.set_yticks(range(matrix.shape[0]), [str(c) for c in range(matrix.shape[0])], fontsize=7)
        axes.set(xlabel="labeled images", ylabel="class", title=f"{strategy}: per-class accuracy, {dataset} / {regime}")
        figure.colorbar(image, ax=axes, label="accuracy (%)")
        figure.tight_layout()
        written += _save(figure, out, f"per_class_{re.sub(r'[^A-Za-z0-9_.-]+', '_', strategy)}_{dataset}_{regime}")
    return written
