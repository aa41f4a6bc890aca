"""Plugin packages installed for a test, each into a site folder of its own (a "temporary site" of the venv):
a process sees a plugin exactly where its PYTHONPATH (or sys.path) holds that folder, as if it were installed.

`install_example` builds the real example package (`examples/albench-bald`) with pip; `fake_package` writes a
distribution's metadata and modules by hand, for plugins built to misbehave (collisions, import errors, wrong
scores). Both are found by `importlib.metadata` like any installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "albench-bald"


def install_example(site: Path, version: str = "0.1.0", work: Path | None = None) -> Path:
    """pip-installs a copy of the example (at `version`) into `site`; the copy keeps the repo's tree clean of
    build folders. Without build isolation: the venv's setuptools builds it, no download."""
    work = work or site.parent / f"albench-bald-{version}"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    project = work / "pyproject.toml"
    project.write_text(project.read_text().replace('version = "0.1.0"', f'version = "{version}"'))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            site,
            work,
        ],
        check=True,
        capture_output=True,
    )
    return site


def fake_package(
    site: Path, package: str, version: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]
) -> Path:
    """A distribution `package` at `version` in `site`: its entry points by group, its modules by dotted name."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    groups = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) for group, points in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(groups))
    for dotted, source in modules.items():
        path = site.joinpath(*dotted.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(site).parents:
            if parent != Path("."):
                (site / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return site


def env_with(*sites: Path) -> dict[str, str]:
    """This environment with `sites` first on the path, and no RAY_ADDRESS (a command starts its own Ray)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(s) for s in sites), str(REPO)])
    return env


def albench(*args, sites: tuple[Path, ...] = (), cwd: Path | None = None, timeout: float = 600):
    """The `albench` command in a fresh process that sees the plugins in `sites`."""
    command = [sys.executable, "-m", "orchestrator.cli", *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, env=env_with(*sites), cwd=cwd, timeout=timeout)
