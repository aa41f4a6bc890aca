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


def critical_difference_diagram(result, out: Path) -> list[str]:
    """Demšar's diagram: strategies on the mean-rank axis (best left), a bar joining each group whose mean ranks
    lie within the Nemenyi critical difference, and the CD to scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result is None:
        return []
    names, ranks = list(result.mean_ranks.index), result.mean_ranks.to_numpy()
    k, groups = len(names), result.groups()
    half = (k + 1) // 2
    bottom = -(0.5 + 0.45 * half + 0.2)
    figure, axes = plt.subplots(figsize=(FIGSIZE[0], 1.0 + 0.45 * (1.6 - bottom)))
    axes.set_xlim(0.5, k + 0.5)
    axes.set_ylim(bottom, 1.6)
    axes.axis("off")
    axes.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        axes.vlines(r, 0, 0.12, color="black")
        axes.text(r, 0.2, str(r), ha="center", fontsize=8)
    axes.hlines(1.1, 1, 1 + result.cd, color="black", linewidth=2)
    axes.text(1 + result.cd / 2, 1.25, f"CD = {result.cd:.2f}", ha="center", fontsize=8)
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        left = i < half
        y = -(0.5 + (i if left else k - 1 - i) * 0.45)
        x_text = 0.55 if left else k + 0.45
        axes.plot([rank, rank, x_text], [0, y, y], color="black", linewidth=0.8)
        axes.text(x_text, y + 0.05, f"{name} ({rank:.2f})", ha="left" if left else "right", va="bottom", fontsize=8)
    for j, group in enumerate(groups):
        lo, hi = result.mean_ranks[group[0]], result.mean_ranks[group[-1]]
        axes.hlines(-0.2 - 0.12 * j, lo - 0.03, hi + 0.03, color="tab:red", linewidth=3)
    axes.set_title(
        f"Mean rank over {result.n_blocks} blocks (Friedman p = {result.friedman_p:.2g}; Nemenyi, α = 0.05)",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, out, "critical_difference")


def class_histograms(tidy: pd.DataFrame, out: Path) -> list[str]:
    """Per (dataset, regime): one panel per strategy, the picks of each round stacked by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    written = []
    for (dataset, regime), part in tidy.groupby(GROUP):
        names = strategy_order(part["strategy"])
        columns = min(4, len(names))
        rows = -(-len(names) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, sharey=True)
        classes = sorted(part["class"].unique())
        palette = colormaps["tab20"] if len(classes) > 10 else colormaps["tab10"]
        for ax, strategy in zip(axes.flat, names, strict=False):
            counts = part[part["strategy"] == strategy].pivot_table(index="round", columns="class", values="count")
            bottom = np.zeros(len(counts))
            for c in classes:
                values = counts[c].to_numpy() if c in counts else np.zeros(len(counts))
                ax.bar(counts.index, values, bottom=bottom, color=palette(c % palette.N), width=0.8, label=str(c))
                bottom += values
            ax.set_title(strategy, fontsize=9)
            ax.set_xlabel("round", fontsize=8)
            ax.set_xticks(counts.index)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        axes[0, 0].set_ylabel("picks per class", fontsize=8)
        figure.suptitle(f"{dataset} / {regime}: class of the picks by round (mean over seeds)", fontsize=10)
        if len(classes) <= 20:
            handles, labels = axes[0, 0].get_legend_handles_labels()
            figure.legend(handles, labels, fontsize=6, title="class", title_fontsize=7, loc="center right")
        figure.tight_layout(rect=(0, 0, 0.92, 1))
        written += _save(figure, out, f"class_balance_{dataset}_{regime}")
    return written
