"""The `albench` command: run a grid, print its results table, list what is available."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from experiments.errors import AlbenchError


def _default_results(grid_name: str) -> Path:
    return Path("results") / grid_name


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise AlbenchError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    return choice


def cmd_run(args: argparse.Namespace) -> None:
    from experiments.grid import load_grid
    from experiments.summary import format_accuracy_tables
    from orchestrator.local import run_grid_locally
    from orchestrator.results import read_rounds

    grid = load_grid(args.grid)
    results = Path(args.results) if args.results else _default_results(grid.name)
    print(f"grid '{grid.name}': {len(grid.trials())} trials; results in {results}")
    outcomes = run_grid_locally(
        grid,
        results,
        data_root=args.data_root,
        device=_device(args.device),
        report=functools.partial(print, flush=True),  # progress reaches a log file or pipe as it happens
        round_progress=args.progress == "rounds",
    )
    rounds = read_rounds(results)
    print()
    print(format_accuracy_tables(rounds[rounds["experiment"] == grid.name]))
    print(f"\nParquet rows: pandas.read_parquet('{results / 'rounds'}')")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines = "\n  ".join(f"{o.spec.label} (trial {o.spec.trial_id}): {o.error}" for o in failed)
        raise AlbenchError(f"{len(failed)} of {len(outcomes)} trials failed; the others completed:\n  {lines}")


def cmd_table(args: argparse.Namespace) -> None:
    from experiments.summary import format_accuracy_tables
    from orchestrator.results import read_rounds

    results = Path(args.results)
    if not (results / "rounds").is_dir():
        raise AlbenchError(f"no results in {results} (expected {results / 'rounds'}/*.parquet); run a grid first")
    print(format_accuracy_tables(read_rounds(results)))


def cmd_list(args: argparse.Namespace) -> None:
    from experiments.datasets import DATASET_NAMES
    from models import MODEL_NAMES
    from strategies import STRATEGY_NAMES

    print("strategies:", ", ".join(STRATEGY_NAMES))
    print("datasets:  ", ", ".join(DATASET_NAMES))
    print("models:    ", ", ".join(MODEL_NAMES))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="albench", description="Deep active-learning benchmarks: grids of trials.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a grid's pending trials (resumes where it stopped)")
    run.add_argument("grid", help="grid YAML file")
    run.add_argument("--results", help="results folder (default: results/<grid name>)")
    run.add_argument("--data-root", help="data root (default: the grid's data_root, $ALBENCH_DATA_ROOT, ~/data)")
    run.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device (default: auto)"
    )
    run.add_argument(
        "--progress", default="rounds", choices=["rounds", "trials"], help="print a line per round or per trial"
    )
    run.set_defaults(func=cmd_run)
    table = sub.add_parser("table", help="print the mean ± std accuracy table of a results folder")
    table.add_argument("--results", required=True)
    table.set_defaults(func=cmd_table)
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
