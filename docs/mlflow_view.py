"""The MLflow view of a grid, checked in a real browser: `python docs/mlflow_view.py [--results results/demo]`.

Starts `mlflow ui` on loopback on the results folder's store, renders it in headless Chromium (Debian's
`chromium`, driven by Playwright), and checks what a user comparing strategies needs to see:
- the experiment opens on its runs (through the link `albench run` prints: MLflow 3.17's UI has a global
  GenAI / Model-training switch that takes precedence over the experiment's kind tag);
- the runs table shows the grid's parent run, and the trials nested under it once it is expanded, with their
  datasets in the Dataset column;
- the parent run's artifacts hold the grid and the report, whose `index.html` opens in the artifact viewer.
Saves the three screenshots under docs/ (or --out) and exits non-zero, naming what is missing, if a check fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium() -> str | None:
    """A Chromium executable: $ALBENCH_CHROMIUM, else Debian's package (`apt-get install chromium`)."""
    found = [os.environ.get("ALBENCH_CHROMIUM", ""), *CHROMIUM_PATHS]
    return next((path for path in found if path and Path(path).is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class View:
    """What the browser saw."""

    landing_heading: str = ""
    collapsed_rows: list[str] = field(default_factory=list)  # run names before the parent is expanded
    expanded_rows: list[str] = field(default_factory=list)
    datasets_shown: bool = False
    artifacts: list[str] = field(default_factory=list)  # names in the parent's artifact tree
    report_title: str = ""
    screenshots: list[Path] = field(default_factory=list)


class MlflowUi:
    """`mlflow ui` on a free loopback port, in its own process group, stopped (that group only) on exit."""

    def __init__(self, store_uri: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def __enter__(self) -> MlflowUi:
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"mlflow ui did not answer on {self.url} within 120 s")

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def _close_assistant(page) -> None:
    """MLflow 3.17 opens an assistant panel beside every page; the screenshots are of the tracking view."""
    close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()
        page.wait_for_timeout(500)


def look(results: Path, experiment: str, out: Path, browser_path: str) -> View:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    store = f"sqlite:///{(results / 'mlflow.db').resolve()}"
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no MLflow experiment '{experiment}' in {store}: run the grid with `albench run` first")
    parents = client.search_runs([found.experiment_id], filter_string="tags.`albench.role` = 'grid'")
    if not parents:
        raise SystemExit(f"experiment '{experiment}' has no grid parent run: run the grid again with this albench")
    parent = parents[0]
    view = View()
    out.mkdir(parents=True, exist_ok=True)
    with MlflowUi(store) as ui, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 820})
        page.goto(f"{ui.url}/#/experiments/{found.experiment_id}?workflowType=machine_learning")
        parent_row = page.get_by_role("row").filter(has_text=parent.info.run_name)
        parent_row.wait_for(timeout=60_000)
        _close_assistant(page)
        view.landing_heading = page.locator("h2, h1").first.inner_text()
        names = page.locator("[col-id='attributes.`Run Name`'] .ag-cell-value")
        view.collapsed_rows = [t.split("\n")[-1] for t in names.all_inner_texts()]
        view.screenshots.append(out / "mlflow-landing.png")
        page.screenshot(path=view.screenshots[-1])
        parent_row.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").first.click()
        page.get_by_role("row").nth(2).wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        view.expanded_rows = [t.split("\n")[-1] for t in names.all_inner_texts()]
        view.datasets_shown = page.locator("text=/-train \\(/").count() > 0
        view.screenshots.append(out / "mlflow-nested-runs.png")
        page.screenshot(path=view.screenshots[-1])
        artifacts = f"{ui.url}/#/experiments/{found.experiment_id}/runs/{parent.info.run_id}/artifacts"
        page.goto(f"{artifacts}?workflowType=machine_learning")
        folder = page.locator("[data-testid=artifact-tree-node][artifact-name=report]")
        folder.wait_for(timeout=60_000)
        _close_assistant(page)
        folder.locator("xpath=..").locator("svg").first.click()  # the folder's expander
        index = page.locator("[data-testid=artifact-tree-node][artifact-name='index.html']")
        index.wait_for(state="visible", timeout=30_000)
        view.artifacts = page.locator("[data-testid=artifact-tree-node]").evaluate_all(
            "nodes => nodes.map(n => n.getAttribute('artifact-name'))"
        )
        index.click()
        title = page.frame_locator("iframe").first.locator("h1")  # the viewer renders HTML in an iframe
        title.wait_for(timeout=30_000)
        view.report_title = title.inner_text()
        view.screenshots.append(out / "mlflow-parent-artifacts.png")
        page.screenshot(path=view.screenshots[-1])
        browser.close()
    return view


def problems(view: View, parent_name: str, trial_names: list[str]) -> list[str]:
    found = []
    if view.collapsed_rows != [parent_name]:
        found.append(f"the collapsed runs table shows {view.collapsed_rows}, not the parent '{parent_name}' alone")
    if view.expanded_rows[:1] != [parent_name] or sorted(view.expanded_rows[1:]) != sorted(trial_names):
        found.append(f"expanded, the runs table shows {view.expanded_rows}; expected the parent, then {trial_names}")
    if not view.datasets_shown:
        found.append("the Dataset column shows no '<dataset>-train' input")
    if "index.html" not in view.artifacts or "grid" not in view.artifacts:
        found.append(f"the parent's artifacts are {view.artifacts}: no grid/ or report/index.html")
    if not view.report_title.startswith("albench report"):
        found.append("report/index.html did not open in the artifact viewer")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--experiment", default=None, help="default: the only experiment of the results folder")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    browser_path = chromium()
    if browser_path is None:
        print("no Chromium found: `apt-get install chromium` (or set ALBENCH_CHROMIUM)", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    from experiments.results import read_rounds

    experiment = args.experiment or read_rounds(args.results)["experiment"].iloc[0]
    view = look(args.results, experiment, args.out, browser_path)
    client = MlflowClient(f"sqlite:///{(args.results / 'mlflow.db').resolve()}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parent_name = next(r.info.run_name for r in runs if "trial_id" not in r.data.tags)
    trials = [r.info.run_name for r in runs if "trial_id" in r.data.tags]
    print(f"landing: {view.landing_heading}; collapsed rows {view.collapsed_rows}")
    print(f"expanded: {len(view.expanded_rows) - 1} trials under '{view.expanded_rows[0]}'")
    print(f"parent artifacts: {len(view.artifacts)} names, index.html {'index.html' in view.artifacts}")
    print("screenshots: " + ", ".join(str(p) for p in view.screenshots))
    found = problems(view, parent_name, trials)
    for line in found:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
