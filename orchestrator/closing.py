"""The end of `albench run`: the grid's summary and report on its MLflow parent run, made again only when the rows
changed since the last time (a re-run of a finished grid reads no checkpoint and rebuilds no report)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from experiments.report import build_report
from experiments.report.data import load, summary_metrics
from experiments.results import ROUNDS_DIR
from orchestrator.store.bookkeeper import Bookkeeper
from orchestrator.store.ledger import TrialEntry

MADE_FROM = ".made-from.json"  # in the report folder: the rows, code and MLflow parent it was made from and logged to


def rows_digest(results: Path) -> str:
    """A digest of the rows folder's files (names, sizes, modification times): any upserted row changes it."""
    folder = Path(results) / ROUNDS_DIR
    files = [e for e in os.scandir(folder) if e.name.endswith(".parquet") and e.name[0] != "."]
    stats = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in files)
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def close_grid(keeper: Bookkeeper, grid_name: str, entries: list[TrialEntry], report: Callable[[str], None]) -> None:
    """The parent run's status, and its summary and report where the rows (or albench) changed since they were
    logged; a report that fails is said, never fatal: the rows are stored."""
    if keeper.tracker is None:
        return
    if not keeper.mlflow_usable:  # the tracking server did not answer in time: the next run logs them
        return
    results = keeper.results
    if not (results / ROUNDS_DIR).is_dir():
        keeper.close_grid(entries, {})
        return
    folder = results / "report"
    made_from = {"rows": rows_digest(results), "git_sha": keeper.sha, "mlflow": keeper.tracker.where()}
    if (folder / "index.html").exists() and _read(folder / MADE_FROM) == made_from:
        keeper.close_grid(entries, {})  # nothing new: the summary and report on MLflow are these rows'
        return
    keeper.close_grid(entries, summary_metrics(load(results), grid_name))
    try:
        keeper.log_report(build_report(results, folder).out)
    except Exception as error:  # the report is a view of results already stored: never fail the run on it
        report(
            f"warning: the report could not be made ({type(error).__name__}: {error}); the results are "
            f"stored; `albench report --results {results} --mlflow` retries it"
        )
        return
    (folder / MADE_FROM).write_text(json.dumps(made_from))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
