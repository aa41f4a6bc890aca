"""The design card's top-level names also exist elsewhere on PyPI: they must resolve to this repository."""

import importlib

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("package", ["orchestrator", "strategies", "models", "experiments"])
def test_top_level_packages_resolve_inside_the_repo(package):
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert str(module.__file__).startswith(str(REPO / package))


def test_core_imports_neither_ray_nor_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.trial, orchestrator.local, orchestrator.cli, strategies, models, experiments.grid;"
        "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
