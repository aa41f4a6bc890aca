"""`albench report`: the paper's tables and figures, and more, from any results folder (reads Parquet only)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from experiments.report import figures, fit, picks, ranks, tables, versus
from experiments.report.data import ReportData, load
from experiments.report.render import to_html, to_markdown, write_table

__all__ = ["build_report", "Report", "load", "ReportData"]


@dataclass
class Report:
    out: Path
    tables: list[tables.Table]
    figures: list[str]
    missing: list[str]


def build_report(
    results: str | Path,
    out: str | Path,
    at: list[int] | None = None,
    per_class: str | None = None,
    min_train_accuracy: float = fit.UNDERFIT_BELOW,
) -> Report:
    """Writes every table (md, tex, csv), figure (png, svg), report.md and index.html into `out`."""
    data = load(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = [
        tables.accuracy_table(data, at),
        fit.train_accuracy_table(data, min_train_accuracy),
        versus.side_by_side_table(data),
        tables.cost_table(data),
        tables.ablation_table(data),
        tables.aulc_table(data),
        tables.rank_table(data),
        versus.paired_table(data),
        tables.paper_table(data),
        ranks.critical_difference_table(data),
        ranks.penalty_table(data),
        picks.class_balance_table(data, Path(results)),
    ]
    for table in made:
        write_table(table, out)
    strategy = per_class or (
        "lplgrad" if "lplgrad" in set(data.rounds["strategy"]) else tables.strategy_order(data.rounds["strategy"])[0]
    )
    pictures = figures.learning_curves(data.rounds, out) + figures.per_class_accuracy(data.rounds, out, strategy)
    pictures += figures.critical_difference_diagram(ranks.critical_difference(data.rounds), out)
    pictures += figures.class_histograms(picks.pick_counts(data.rounds, Path(results))[0], out)
    report = Report(out, made, pictures, data.missing)
    _write_pages(report, Path(results))
    return report


def _write_pages(report: Report, results: Path) -> None:
    status = (
        (["## Missing (results are partial)", ""] + [f"- {m}" for m in report.missing])
        if report.missing
        else ["All trials complete."]
    )
    pngs = [f for f in report.figures if f.endswith(".png")]
    markdown = [f"# albench report: {results}", "", *status, ""] + [to_markdown(t) for t in report.tables]
    markdown += ["## Figures", ""] + [f"![{p}]({p})" for p in pngs]
    (report.out / "report.md").write_text("\n".join(markdown) + "\n")
    missing = "".join(f"<li>{html.escape(m)}</li>" for m in report.missing)
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>albench report</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:640px}</style></head><body>",
        f"<h1>albench report: {html.escape(str(results))}</h1>",
        f"<h2>Missing (results are partial)</h2><ul>{missing}</ul>" if missing else "<p>All trials complete.</p>",
        *[to_html(t) for t in report.tables],
        "<h2>Figures</h2>",
        *[f"<img src='{p}' alt='{p}'>" for p in pngs],
        "</body></html>",
    ]
    (report.out / "index.html").write_text("\n".join(page))
