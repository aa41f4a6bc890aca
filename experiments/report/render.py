"""Writes a Table as Markdown, LaTeX, HTML (best cells in bold) and CSV (the tidy numbers)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from experiments.report.tables import Table


def _cells(table: Table) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    frame = table.display.reset_index()
    index_width = table.display.index.nlevels
    best = (
        table.best
        if table.best is not None
        else pd.DataFrame(False, index=table.display.index, columns=table.display.columns)
    )
    rows = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    marks = [[False] * index_width + [bool(v) for v in best.iloc[i]] for i in range(len(rows))]
    return [str(c) for c in frame.columns], rows, marks


def to_markdown(table: Table) -> str:
    if table.display.empty:  # nothing to tabulate: the notes say why
        return "\n".join([f"### {table.title}", ""] + [f"- {note}" for note in table.notes]) + "\n"
    header, rows, marks = _cells(table)
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, mark in zip(rows, marks, strict=True):
        lines.append("| " + " | ".join(f"**{c}**" if m and c else c for c, m in zip(row, mark, strict=True)) + " |")
    lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("−", "-"),
    ):
        text = text.replace(a, b)
    return text


def to_latex(table: Table) -> str:
    if table.display.empty:
        return "".join(f"% {note}\n" for note in table.notes)
    header, rows, marks = _cells(table)
    lines = [
        r"\begin{tabular}{" + "l" * len(header) + "}",
        r"\hline",
        " & ".join(map(_latex_escape, header)) + r" \\",
        r"\hline",
    ]
    for row, mark in zip(rows, marks, strict=True):
        cells = [
            rf"\textbf{{{_latex_escape(c)}}}" if m and c else _latex_escape(c) for c, m in zip(row, mark, strict=True)
        ]
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join([*lines, r"\hline", r"\end{tabular}"]) + "\n"


def to_html(table: Table) -> str:
    if table.display.empty:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
        return f"<h3>{html.escape(table.title)}</h3><ul>{notes}</ul>"
    header, rows, marks = _cells(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{'<b>' + html.escape(c) + '</b>' if m and c else html.escape(c)}</td>"
            for c, m in zip(row, mark, strict=True)
        )
        + "</tr>"
        for row, mark in zip(rows, marks, strict=True)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}</table>" + (
        f"<ul>{notes}</ul>" if notes else ""
    )


def write_table(table: Table, out: Path) -> None:
    (out / f"{table.name}.md").write_text(to_markdown(table))
    (out / f"{table.name}.tex").write_text(to_latex(table))
    table.data.to_csv(out / f"{table.name}.csv", index=False)
