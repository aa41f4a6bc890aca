"""The package layout: names resolve inside the repo, imports run one way (vocabulary at the ground, reports and
the CLI on top) with no cycle, the core needs neither Ray nor MLflow, and one module writes the results."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

# bottom to top: each imports only lower ones (`albench` holds the public extension API, over the three below it)
PACKAGES = ("experiments", "models", "strategies", "orchestrator", "albench")

# Bottom to top; a module may import its own layer or lower ones. Every module of the packages is in one layer.
LAYERS = {
    "vocabulary": [
        "experiments.errors",
        "experiments.specs",
        "experiments.defaults",
        "experiments.records",
        "experiments.results",
        "experiments.plugins",
    ],
    "data": ["experiments.datasets"],
    "models": ["models"],
    "strategies": ["strategies"],
    # orchestrator's sub-packages, one layer each: what runs a job in any process; the one writer of a results
    # folder; the grid and its plan of jobs; the backends that run a plan (in this process, or on Ray Tune)
    "engine": ["orchestrator.engine"],
    "store": ["orchestrator.store"],
    "plan": ["orchestrator.plan"],
    "run": ["orchestrator.run"],
    "reports and CLI": [
        "experiments.report",
        "experiments.summary",
        "orchestrator.closing",
        "orchestrator.cli",
        "experiments",
        "orchestrator",
        "albench",
    ],
}


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@cache
def imports(top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the modules (ours, or other top-level packages) it imports; in function bodies too unless
    `top_level_only` (what importing the module itself runs)."""
    graph = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        targets = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                full = [f"{node.module}.{alias.name}" for alias in node.names]
                targets |= {t for t in full if t in modules()} or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {_ours(t) for t in targets} - {name}
    return graph


def _ours(target: str) -> str:
    """The module of ours a dotted name lands in (its longest known prefix), else its top-level package."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules():
            return ".".join(parts[:end])
    return parts[0]


def layer_of(module: str) -> int:
    best = max(
        ((len(prefix), i) for i, group in enumerate(LAYERS.values()) for prefix in group if _within(module, prefix)),
        default=None,
    )
    assert best is not None, f"{module} is in no layer of tests/test_layout.py: place it"
    return best[1]


def _within(module: str, prefix: str) -> bool:
    """A layer's entry names a module, or a whole package; the `experiments` and `orchestrator` entries name only
    the packages' own __init__ (their modules are placed one by one)."""
    return module == prefix or (prefix not in ("experiments", "orchestrator") and module.startswith(prefix + "."))


@pytest.mark.parametrize("package", PACKAGES)
def test_top_level_packages_resolve_inside_the_repo(package):
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert str(module.__file__).startswith(str(REPO / package))


def test_packages_import_only_lower_packages():
    upward = [
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if target.split(".")[0] in PACKAGES
        and PACKAGES.index(target.split(".")[0]) > PACKAGES.index(module.split(".")[0])
    ]
    assert not upward, "upward imports between packages:\n" + "\n".join(upward)


def test_modules_import_only_their_own_or_lower_layers():
    names = list(LAYERS)
    upward = [
        f"{module} ({names[layer_of(module)]}) -> {target} ({names[layer_of(target)]})"
        for module, targets in imports().items()
        for target in targets
        if target in modules() and layer_of(target) > layer_of(module)
    ]
    assert not upward, "upward imports between layers:\n" + "\n".join(upward)


def test_no_module_import_cycles():
    graph = {m: {t for t in ts if t in modules()} for m, ts in imports().items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_core_imports_neither_ray_nor_mlflow():
    """What importing the core runs (module-level imports, transitively) never reaches Ray or MLflow."""
    graph = imports(top_level_only=True)
    core = [
        "orchestrator.engine.trial",
        "orchestrator.run.local",
        "orchestrator.cli",
        "orchestrator.plan.grid",
        "strategies",
        "models",
    ]
    seen, todo = set(), list(core)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph.get(module, ()))
    assert not seen & {"ray", "mlflow"}, sorted(seen)


@pytest.mark.slow
def test_importing_the_core_in_a_fresh_process_loads_neither_ray_nor_mlflow():
    code = (
        "import sys, orchestrator.engine.trial, orchestrator.run.local, orchestrator.cli, orchestrator.plan.grid, "
        "strategies, models;"
        "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# the bookkeeper, its carry-over methods (a mixin) and its MLflow thread, which it alone drives
BOOKKEEPER = {"orchestrator.store.bookkeeper", "orchestrator.store.carry_over", "orchestrator.store.mlflow_sink"}


def test_only_the_bookkeeper_writes_the_results_folder():
    writers = {
        "orchestrator.store.ledger": {"write_entry", "remove_entry", "write_round0_entry"},
        "experiments.results": {"write_rounds"},
        "orchestrator.engine.inputs": {"save_labels", "save_splits"},  # the splits and labels beside the rows
        "orchestrator.engine.checkpoint": {"save_checkpoint", "save_fit"},  # the in-process backend's checkpoints
    }
    offenders = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or module in BOOKKEEPER:
                continue
            names = {alias.name for alias in node.names}
            if names & writers.get(node.module, set()) or node.module == "orchestrator.store.tracking":
                offenders.append(f"{module}: from {node.module} import {', '.join(sorted(names))}")
    assert not offenders, "only orchestrator.store.bookkeeper may write results:\n" + "\n".join(offenders)


SUB_PACKAGES = ("engine", "store", "plan", "run")  # orchestrator/, bottom to top


def test_the_orchestrator_is_its_sub_packages_beside_the_cli():
    ours = [m for m in modules() if m.startswith("orchestrator.")]
    loose = {m for m in ours if m.count(".") == 1 and m.split(".")[1] not in SUB_PACKAGES}
    assert loose == {"orchestrator.cli", "orchestrator.closing"}, "a module of orchestrator/ outside its sub-packages"
    assert {m.split(".")[1] for m in ours if m.count(".") == 2} == set(SUB_PACKAGES)
    assert list(LAYERS)[4:8] == list(SUB_PACKAGES) and all(LAYERS[p] == [f"orchestrator.{p}"] for p in SUB_PACKAGES)


def test_the_engine_imports_neither_ray_nor_mlflow_anywhere():
    """What runs a job in any process, function bodies included: the in-process backend needs neither."""
    engine = {m: targets for m, targets in imports().items() if m.startswith("orchestrator.engine")}
    assert engine and not {m for m, targets in engine.items() if targets & {"ray", "mlflow"}}
