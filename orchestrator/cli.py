"""The `albench` command: run a grid (on Ray, or in this process), show its status, print its table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments.errors import AlbenchError


def say(*values) -> None:
    """Prints at once: progress reaches a log file or a pipe as it happens. A function of this module, so Tune can
    pickle the callback that holds it even where Ray has wrapped `print` (`--verbose`)."""
    print(*values, flush=True)


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise AlbenchError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    return choice


def cmd_run(args: argparse.Namespace) -> None:
    from orchestrator.plan.grid import load_grid
    from orchestrator.store.lock import results_lock

    if args.ship and args.in_process:
        raise AlbenchError("--ship sends plugin code to Ray workers; --in-process runs none: drop one of them")
    grid = load_grid(args.grid)
    if not args.in_process:  # the grid's `resources.ship` folders, relative to the grid file, beside --ship's
        args.ship = [*args.ship, *(str(Path(args.grid).parent / folder) for folder in grid.resources.ship)]
    if args.ship:  # before anything is made: a folder that cannot be shipped is refused first
        from orchestrator.run.ship import shipped_modules

        shipped_modules(args.ship, grid.trials())
    results = Path(args.results) if args.results else Path("results") / grid.name
    with results_lock(results, say):  # one driver per results folder
        _run_locked(args, grid, results)


def _run_locked(args: argparse.Namespace, grid, results: Path) -> None:
    from experiments.results import read_rounds
    from experiments.summary import format_accuracy_tables
    from orchestrator.closing import close_grid
    from orchestrator.plan.grid import resolved_grid
    from orchestrator.store.bookkeeper import Bookkeeper

    start = time.perf_counter()
    # the store exists before any trial starts
    keeper = Bookkeeper.tracking(results, args.tracking_uri, grid.name, args.mlflow_wait)
    quiet_libraries(args.verbose)  # after MLflow's import, which sets its own log level
    uri = keeper.tracking_uri
    say(f"grid '{grid.name}': {len(grid.trials())} trials; results in {results}")
    keeper.open_grid(Path(args.grid), resolved_grid(grid))
    if args.in_process:
        from orchestrator.run.local import run_grid_locally

        entries = run_grid_locally(
            grid,
            keeper,
            data_root=args.data_root,
            device=_device(args.device),
            report=say,
            round_progress=args.progress == "rounds",
            set_aside_old=args.set_aside_old,
        )
    else:
        from orchestrator.run.ray_runner import run_grid_on_ray

        entries = run_grid_on_ray(
            grid,
            keeper,
            address=args.address,
            data_root=args.data_root,
            max_failures=args.max_failures,
            storage_path=args.storage_path,
            report=say,
            set_aside_old=args.set_aside_old,
            verbose=args.verbose,
            ship=tuple(args.ship),
        )
    close_grid(keeper, grid.name, entries, say)  # the grid's summary and report on its MLflow parent run
    rounds = read_rounds(results)
    say(f"\n{format_accuracy_tables(rounds[rounds['experiment'] == grid.name])}")
    say(f"\nwall time {time.perf_counter() - start:.1f} s; Parquet: pandas.read_parquet('{results / 'rounds'}')")
    if uri:  # MLflow 3.17's UI opens on GenAI pages unless its workflow switch says model training
        page = f"#/experiments/{keeper.tracker.experiment_id}?workflowType=machine_learning"
        if uri.startswith("sqlite:"):
            say(f"MLflow UI: mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{page}")
        else:
            say(f"MLflow: experiment '{grid.name}' at {uri}/{page}")
    from orchestrator.store.ledger import TrialStatus

    failed = [e for e in entries if e.status == TrialStatus.FAILED]
    unfinished = [e for e in entries if e.status in (TrialStatus.PENDING, TrialStatus.RUNNING)]
    if failed:
        lines = "\n  ".join(f"{e.label} (trial {e.trial_id}): {e.error}" for e in failed)
        raise AlbenchError(f"{len(failed)} of {len(entries)} trials failed; the others completed:\n  {lines}")
    if unfinished:
        raise AlbenchError(f"{len(unfinished)} trials are unfinished; run the same command again to resume them")


def quiet_libraries(verbose: bool) -> None:
    """Ray's and MLflow's own log lines stay off albench's console unless `--verbose` asks for them."""
    import logging
    import os

    if verbose:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "false"
        return
    for name in ("mlflow", "alembic"):  # Ray's: `connect` starts it at ERROR
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_status(args: argparse.Namespace) -> None:
    from orchestrator.store.ledger import TrialStatus, read_all

    entries = read_all(Path(args.results))
    if not entries:
        raise AlbenchError(f"no trials in {args.results} (expected {Path(args.results) / 'trials'}/*.json)")
    order = {TrialStatus.RUNNING: 0, TrialStatus.FAILED: 1, TrialStatus.PENDING: 2, TrialStatus.DONE: 3}
    say(f"{'status':8} {'rounds':>7}  {'trial':16}  label")
    for e in sorted(entries, key=lambda e: (order[e.status], e.label)):
        say(
            f"{e.status:8} {e.rounds_done:>3}/{e.n_rounds:<3}  {e.trial_id:16}  {e.label}"
            + (f"  -- {e.error}" if e.error else "")
            + ("  (written by an older albench: the next run carries it over)" if not e.spec_version else "")
        )
    counts = {s: sum(e.status == s for e in entries) for s in order}
    say(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {sum(e.rounds_done for e in entries)} rounds done")


def cmd_table(args: argparse.Namespace) -> None:
    from experiments.results import read_rounds
    from experiments.summary import format_accuracy_tables

    results = Path(args.results)
    if not (results / "rounds").is_dir():
        raise AlbenchError(f"no results in {results} (expected {results / 'rounds'}/*.parquet); run a grid first")
    say(format_accuracy_tables(read_rounds(results)))


def cmd_report(args: argparse.Namespace) -> None:
    from experiments.report import build_report

    try:
        at = [int(n) for n in args.at.split(",")] if args.at else None
    except ValueError:
        raise AlbenchError(
            f"--at takes labeled counts separated by commas (e.g. 3000,6000,9000), got {args.at!r}"
        ) from None
    out = Path(args.out) if args.out else Path(args.results) / "report"
    report = build_report(
        args.results, out, at=at, per_class=args.per_class, min_train_accuracy=args.min_train_accuracy
    )
    say(report.tables[0].display.to_string())
    fit = next(t for t in report.tables if t.name == "train_accuracy")
    if fit.notes and fit.notes[0].startswith("UNDERFIT"):
        say("\nwarning: " + "\n  ".join(fit.notes))
    if report.missing:
        say(f"\npartial results: {len(report.missing)} trials unfinished or not started (listed in the report)")
    if args.mlflow:
        for name in report_experiments(args.results):
            keeper = _keeper_of(args.results, args.tracking_uri, name)
            if not keeper.log_report(out):
                raise AlbenchError(
                    f"grid '{name}' has no MLflow parent run at {keeper.tracking_uri}: `albench run` makes it "
                    "(give --tracking-uri if the grid was tracked elsewhere)"
                )
            say(f"logged the report as artifacts of grid '{name}''s parent run ({keeper.tracking_uri})")
    say(
        f"\nwrote {len(report.tables)} tables (md, tex, csv) and {len(report.figures)} figure files to {out}; "
        f"open {out / 'index.html'}"
    )


def report_experiments(results: str) -> list[str]:
    from experiments.results import read_rounds

    return sorted(read_rounds(results)["experiment"].unique())


def _keeper_of(results: str, tracking_uri: str | None, experiment: str):
    from orchestrator.store.bookkeeper import Bookkeeper

    if tracking_uri is None and not Path(results, "mlflow.db").exists():
        raise AlbenchError(f"no MLflow store in {results} (mlflow.db); give --tracking-uri where the grid was tracked")
    return Bookkeeper.tracking(results, tracking_uri, experiment)


def cmd_plan(args: argparse.Namespace) -> None:
    from orchestrator.plan.describe import format_cost, results_lines
    from orchestrator.plan.grid import load_grid

    grid = load_grid(args.grid)
    say(format_cost(grid, args.train_ips))
    results = Path(args.results) if args.results else Path("results") / grid.name
    if (results / "trials").is_dir():
        say("\n".join(results_lines(grid.trials(), results)))


def cmd_list(args: argparse.Namespace) -> None:
    from experiments.datasets import REGISTRY as DATASETS
    from experiments.plugins import BUILT_IN, discovered
    from models import REGISTRY as MODELS
    from strategies import REGISTRY as STRATEGIES

    def shown(name: str, source: str) -> str:
        return name if source == BUILT_IN else f"{name} [{source}]"

    say("strategies and their settings (set per strategy in a grid: {name: bait, lam: 0.01}):")
    rows = STRATEGIES.listing()
    width = max(17, *(len(shown(n, s)) + 1 for n, s, _ in rows))
    for name, source, problem in rows:
        settings = "cannot be used: see below" if problem else STRATEGIES.get(name).Settings.describe()
        say(f"  {shown(name, source):{width}} {settings}")
    listed = {"strategy": rows}
    for kind, title, registry in (("dataset", "datasets:", DATASETS), ("model", "models:", MODELS)):
        listed[kind] = registry.listing()
        say(f"{title:11}", ", ".join(shown(n, s) for n, s, _ in listed[kind]))
    plugins = [p for kind in ("strategy", "model", "dataset") for p in discovered(kind)]
    if plugins:
        say("plugins (installed packages' entry points):")
        for p in plugins:
            say(f"  {p.kind:9} {p.name:17} {p.package} {p.version}   ({p.value})")
    problems = [problem for rows in listed.values() for _, _, problem in rows if problem]
    if problems:
        say("plugins that cannot be used (grids that do not name them still run):\n  " + "\n  ".join(problems))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="albench", description="Deep active-learning benchmarks: grids of trials.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid's pending trials (resumes where it stopped)")
    run.add_argument("grid", help="grid YAML file")
    run.add_argument("--results", help="results folder (default: results/<grid name>)")
    run.add_argument(
        "--address",
        help="Ray cluster to join (auto: the one running on this machine, or HEAD_IP:6379); default: $RAY_ADDRESS, "
        "else a Ray instance of its own",
    )
    run.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its last round")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in the results folder; 'none': off)")
    run.add_argument("--storage-path", help="Tune checkpoint storage shared by all nodes (default: RESULTS/tune)")
    run.add_argument("--data-root", help="data root (default: the grid's data_root, $ALBENCH_DATA_ROOT, ~/data)")
    run.add_argument("--in-process", action="store_true", help="run the trials one by one in this process, no Ray")
    run.add_argument(
        "--ship",
        action="append",
        default=[],
        metavar="DIR",
        help="a plugin's package folder to send to every Ray worker (repeatable), for nodes without it installed",
    )
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="with --in-process")
    run.add_argument("--progress", default="rounds", choices=["rounds", "trials"], help="with --in-process")
    run.add_argument("--verbose", action="store_true", help="Ray's, Tune's and MLflow's own lines on the console too")
    run.add_argument(
        "--mlflow-wait",
        type=float,
        default=120.0,
        help="seconds the end of a run waits for a lagging tracking server (default: 120; the next run catches up)",
    )
    run.add_argument(
        "--set-aside-old",
        action="store_true",
        help="move trials of an older albench that cannot be carried over to RESULTS/set-aside/ and run the grid",
    )
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="list the trials of a results folder: done, running, failed, pending")
    status.add_argument("--results", required=True)
    status.set_defaults(func=cmd_status)
    table = sub.add_parser("table", help="print the mean ± std accuracy table of a results folder")
    table.add_argument("--results", required=True)
    table.set_defaults(func=cmd_table)
    report = sub.add_parser(
        "report", help="tables (md, csv, tex), figures (png, svg) and index.html of a results folder"
    )
    report.add_argument("--results", required=True)
    report.add_argument("--out", help="output folder (default: RESULTS/report)")
    report.add_argument("--at", help="labeled counts for the accuracy table, e.g. 3000,6000,9000 (default: all)")
    report.add_argument("--per-class", help="strategy of the per-class accuracy figure (default: lplgrad)")
    report.add_argument(
        "--mlflow", action="store_true", help="also log the report as artifacts of the grid's MLflow parent run"
    )
    report.add_argument("--tracking-uri", help="with --mlflow (default: sqlite in the results folder)")
    report.add_argument(
        "--min-train-accuracy",
        type=float,
        default=0.9,
        help="warn where a strategy's mean train accuracy at a labeled count is below this (default: 0.9)",
    )
    report.set_defaults(func=cmd_report)
    plan = sub.add_parser("plan", help="what a grid costs before it runs: trials, rounds, images trained and scored")
    plan.add_argument("grid", help="grid YAML file")
    plan.add_argument("--train-ips", type=float, help="measured training images/s on the target device: adds hours")
    plan.add_argument(
        "--results", help="results folder to compare with: what is done, what is new (default: results/<grid name>)"
    )
    plan.set_defaults(func=cmd_plan)
    sub.add_parser("list", help="list strategies, datasets and models").set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AlbenchError as error:
        print(f"albench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nalbench: interrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
