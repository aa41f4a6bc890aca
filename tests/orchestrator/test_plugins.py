"""Plugins: a strategy, model or dataset of another installed package, found by its entry points, run by a grid
exactly like albench's own, in this process, on a local Ray instance and on a cluster whose workers lack it.

The real example package (`examples/albench-bald`: BALD with MC dropout, and a small CNN with dropout) is
pip-installed into a temporary site folder; packages built to misbehave are written by hand
(`tests/plugin_sites.py`). A command sees a plugin exactly where its PYTHONPATH holds the site folder.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from albench import api as public_api
from experiments.errors import ConfigError
from experiments.plugins import forget_discovered
from experiments.results import read_rounds
from orchestrator.plan.grid import parse_grid
from orchestrator.store.ledger import TrialStatus, read_all
from tests.orchestrator.readers import records
from tests.plugin_sites import REPO, albench, fake_package, install_example

GRID = """
name: bald-grid
datasets: [digits]
model: mc_cnn
regimes:
  small: {initial: 40, query: 40, budget: 120, subset: 300}
strategies: [bald, entropy, random]
seeds: [0]
train: {epochs: 2}
resources: {gpus_per_trial: 0, cpus_per_trial: 1}
"""


@pytest.fixture(scope="session")
def bald_site(tmp_path_factory) -> Path:
    """The example package, version 0.1.0, installed into a site folder of its own."""
    root = tmp_path_factory.mktemp("bald-0.1.0")
    return install_example(root / "site", "0.1.0")


@pytest.fixture(scope="session")
def bald_site_v2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bald-0.2.0")
    return install_example(root / "site", "0.2.0")


@pytest.fixture(scope="session")
def in_process_run(tmp_path_factory, bald_site) -> Path:
    """The grid run in this process (`--in-process`): the baseline the Ray runs must equal."""
    work = tmp_path_factory.mktemp("in-process")
    (work / "grid.yaml").write_text(GRID)
    done = albench("run", "grid.yaml", "--results", "results", "--in-process", sites=(bald_site,), cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    return work / "results"


@pytest.fixture
def seen(monkeypatch):
    """Lets this process see the plugins of the given site folders, for this test only."""

    def see(*sites: Path) -> None:
        for site in sites:
            monkeypatch.syspath_prepend(str(site))
        forget_discovered()

    yield see
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.split(".")[0] in ("albench_bald", "clash", "broken", "twin_a", "twin_b")]:
        del sys.modules[name]
    forget_discovered()


def work_dir(tmp_path: Path, grid: str = GRID) -> Path:
    work = tmp_path / "work"  # the command's folder: Ray puts it on its workers' path, so it holds no plugin
    work.mkdir()
    (work / "grid.yaml").write_text(grid)
    return work


# -- the public API ---------------------------------------------------------------------------------------------

PUBLIC = {
    "API_VERSION",
    "Strategy",
    "StrategySettings",
    "ScoringInputs",
    "ShardResult",
    "top_b",
    "merge_shards",
    "map_outputs",
    "eval_mode",
    "seeded_uniform",
    "Objective",
    "CROSS_ENTROPY",
    "Networks",
    "NetworkBuilder",
    "ModelOutput",
    "Dataset",
    "DatasetPlugin",
    "TrainSpec",
    "AlbenchError",
    "ConfigError",
}


def test_the_public_api_is_small_pinned_and_documented():
    """A name added to or dropped from `albench.api` is a deliberate change: this list and the docs page say it."""
    assert set(public_api.__all__) == PUBLIC and public_api.API_VERSION == 1
    assert all(hasattr(public_api, name) for name in PUBLIC)
    page = (REPO / "docs" / "plugins.md").read_text()
    assert [name for name in sorted(PUBLIC) if f"`{name}`" not in page] == []


def test_the_example_plugin_imports_only_the_public_api():
    used = set()
    for path in (REPO / "examples" / "albench-bald" / "src").rglob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("from albench", "import albench", "from experiments", "from orchestrator")):
                used.add(line.split()[1])
            assert not line.startswith(("from strategies", "from models", "from experiments", "from orchestrator"))
    assert used == {"albench.api"}


# -- discovery, listing and identity ---------------------------------------------------------------------------


@pytest.mark.slow
def test_albench_list_shows_each_plugin_with_its_package_and_version(bald_site, tmp_path):
    shown = albench("list", sites=(bald_site,), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "bald [albench-bald 0.1.0]" in shown.stdout and "samples (int > 1, default 20)" in shown.stdout
    assert "mc_cnn [albench-bald 0.1.0]" in shown.stdout
    assert "strategy  bald              albench-bald 0.1.0   (albench_bald.strategy:BaldStrategy)" in shown.stdout
    assert "albench-bald" not in albench("list", cwd=tmp_path).stdout  # not installed: not listed


def test_a_plugins_package_and_version_enter_its_trial_ids_and_built_in_ids_stay(seen, bald_site, bald_site_v2):
    builtin = parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["entropy"]}).trials()
    seen(bald_site)
    first = parse_grid(_grid_data()).trials()
    by_label = {t.label: t for t in first}
    assert by_label["digits/small/bald/seed0"].plugins == {
        "strategy": "albench-bald 0.1.0",
        "model": "albench-bald 0.1.0",
    }
    assert by_label["digits/small/entropy/seed0"].plugins == {"model": "albench-bald 0.1.0"}
    forget_discovered()
    seen(bald_site_v2)  # now 0.2.0 comes first on the path
    second = {t.label: t for t in parse_grid(_grid_data()).trials()}
    assert {label: t.trial_id for label, t in by_label.items()}.keys() == second.keys()
    assert all(second[label].trial_id != t.trial_id for label, t in by_label.items())
    assert all(second[label].plugins["model"] == "albench-bald 0.2.0" for label in second)
    # albench's own trials: no plugins field in the id (the pinned ids of tests/experiments/test_identity.py hold)
    from experiments.specs import canonical_form

    assert all("plugins" not in canonical_form(t) for t in builtin)


def _grid_data() -> dict:
    import yaml

    return yaml.safe_load(GRID)


def test_a_dropout_backbone_trains_the_same_trial_alike_whatever_the_global_rng_holds(seen, bald_site, digits):
    """The plugin's dropout draws from torch's global RNG while training: each round seeds it from the trial's
    streams, so a trial stays a pure function of its spec and seed (and a resumed one repeats it)."""
    import torch

    from orchestrator.engine.trial import run_trial

    seen(bald_site)
    spec = next(t for t in parse_grid(_grid_data()).trials() if t.strategy.name == "bald")
    torch.manual_seed(1)
    first = run_trial(spec, digits).records
    torch.manual_seed(2)
    torch.rand(1000)
    second = run_trial(spec, digits).records
    assert [(r.test_accuracy, r.train_loss, r.selected) for r in first] == [
        (r.test_accuracy, r.train_loss, r.selected) for r in second
    ]


# -- the example grid, in this process and on Ray --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ray
def test_the_example_plugin_runs_beside_built_ins_in_process_and_on_ray_and_looks_like_one(
    in_process_run, bald_site, tmp_path
):
    work = work_dir(tmp_path)
    on_ray = albench("run", "grid.yaml", "--results", "results", sites=(bald_site,), cwd=work)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    pd.testing.assert_frame_equal(records(work / "results"), records(in_process_run))

    rows = read_rounds(in_process_run)
    assert set(rows["strategy"]) == {"bald", "entropy", "random"}
    filled = rows.notna()
    bald, entropy = filled[rows["strategy"] == "bald"], filled[rows["strategy"] == "entropy"]
    assert (bald.all() == entropy.all()).all(), "bald's rows fill other columns than a built-in's"
    assert set(rows.loc[rows["strategy"] == "bald", "plugins"]) == {
        "model: albench-bald 0.1.0; strategy: albench-bald 0.1.0"
    }

    from orchestrator.store.tracking import Tracker, default_tracking_uri
    from tests.orchestrator.readers import trial_runs

    tracker = Tracker(default_tracking_uri(in_process_run), "bald-grid", in_process_run)
    runs = {r.data.tags["trial_id"]: r for r in trial_runs(tracker)}
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and len(runs) == 3
    by_strategy = {r.data.params["strategy.name"]: r for r in runs.values()}
    assert by_strategy["bald"].data.params["plugins.strategy"] == "albench-bald 0.1.0"
    assert set(by_strategy["bald"].data.metrics) == set(by_strategy["entropy"].data.metrics)

    report = albench("report", "--results", in_process_run, sites=(bald_site,), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    for name in ("accuracy", "aulc"):  # the report's columns: bald beside the built-ins
        assert set(pd.read_csv(in_process_run / "report" / f"{name}.csv")["strategy"]) == {"bald", "entropy", "random"}


@pytest.mark.slow
@pytest.mark.ray
def test_on_a_cluster_whose_workers_lack_the_plugin_ship_sends_it(
    node_with_2_cpus, in_process_run, bald_site, tmp_path
):
    import ray

    @ray.remote(num_cpus=1)
    def importable() -> bool:
        return importlib.util.find_spec("albench_bald") is not None

    assert ray.get(importable.remote()) is False, "the cluster's workers must not have the plugin of their own"
    address = ray.get_runtime_context().gcs_address
    work = work_dir(tmp_path)

    unshipped = albench(
        "run", "grid.yaml", "--results", "unshipped", "--address", address, sites=(bald_site,), cwd=work
    )
    assert unshipped.returncode == 2
    assert "PluginImportError: strategy 'bald' (albench-bald 0.1.0) is not installed on" in unshipped.stderr
    assert "(Ray node " in unshipped.stderr and "--ship DIR" in unshipped.stderr
    assert "retrying" not in unshipped.stdout  # failed at once: no retry can install a package
    assert {e.status for e in read_all(work / "unshipped")} == {TrialStatus.FAILED}

    shipped = albench(
        "run", "grid.yaml", "--results", "shipped", "--address", address, "--ship", bald_site / "albench_bald",
        sites=(bald_site,), cwd=work,
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    pd.testing.assert_frame_equal(records(work / "shipped"), records(in_process_run))

    # the grid's own field instead of the flag, relative to the grid file
    (work / "grid.yaml").write_text(
        GRID.replace("cpus_per_trial: 1}", "cpus_per_trial: 1, ship: [../site/albench_bald]}")
    )
    shutil.copytree(bald_site, tmp_path / "site")
    by_grid = albench(
        "run", "grid.yaml", "--results", "by-grid", "--address", address, sites=(tmp_path / "site",), cwd=work
    )
    assert by_grid.returncode == 0, by_grid.stdout + by_grid.stderr
    pd.testing.assert_frame_equal(records(work / "by-grid"), records(in_process_run))


@pytest.mark.slow
@pytest.mark.ray
def test_a_worker_with_another_version_of_the_plugin_refuses_it_naming_both(
    ray_head_without_cpus, bald_site, bald_site_v2, tmp_path
):
    """Every node has the package installed, but not the same version: the trial fails at once, naming both."""
    node = ray_head_without_cpus.add_node(num_cpus=2, env_vars={"PYTHONPATH": str(bald_site_v2)})
    ray_head_without_cpus.wait_for_nodes()
    try:
        work = work_dir(tmp_path)
        address = ray_head_without_cpus.address
        done = albench("run", "grid.yaml", "--results", "results", "--address", address, sites=(bald_site,), cwd=work)
    finally:
        ray_head_without_cpus.remove_node(node)
    assert done.returncode == 2
    assert "PluginVersionError" in done.stderr
    assert (
        "the trial was planned with albench-bald 0.1.0, but" in done.stderr and "has albench-bald 0.2.0" in done.stderr
    )
    assert "retrying" not in done.stdout


@pytest.mark.slow
def test_ship_refuses_a_folder_the_driver_does_not_import_the_plugin_from(bald_site, bald_site_v2, tmp_path):
    work = work_dir(tmp_path)
    other = bald_site_v2 / "albench_bald"
    done = albench("run", "grid.yaml", "--results", "results", "--ship", other, sites=(bald_site,), cwd=work)
    assert done.returncode == 2
    assert f"--ship {other}: this driver imports albench_bald" in done.stderr
    assert f"from {bald_site / 'albench_bald'}, not from the folder it would ship" in done.stderr
    assert not (work / "results").exists()  # refused before anything was made
    not_a_package = albench("run", "grid.yaml", "--ship", tmp_path, sites=(bald_site,), cwd=work)
    assert "not a Python package folder (no __init__.py" in not_a_package.stderr


# -- a new version -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_new_plugin_version_makes_new_trials_plan_says_which_and_no_table_mixes_them(
    in_process_run, bald_site, bald_site_v2, tmp_path
):
    results = tmp_path / "results"
    shutil.copytree(in_process_run, results)
    (tmp_path / "grid.yaml").write_text(GRID)
    before = albench("plan", "grid.yaml", "--results", results, sites=(bald_site,), cwd=tmp_path)
    assert "strategy bald: albench-bald 0.1.0 (1 trials)" in before.stdout
    assert "3 of 3 trials complete" in before.stdout and "new plugin version" not in before.stdout

    after = albench("plan", "grid.yaml", "--results", results, sites=(bald_site_v2,), cwd=tmp_path)
    assert "strategy bald: albench-bald 0.2.0 (1 trials)" in after.stdout
    assert "0 of 3 trials complete" in after.stdout
    assert (
        "new plugin version (model albench-bald 0.1.0 -> albench-bald 0.2.0; strategy albench-bald 0.1.0 -> "
        "albench-bald 0.2.0): 1 new trials" in after.stdout
    )
    assert "new plugin version (model albench-bald 0.1.0 -> albench-bald 0.2.0): 2 new trials" in after.stdout

    run = albench("run", "grid.yaml", "--results", results, "--in-process", sites=(bald_site_v2,), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    entries = read_all(results)
    assert len(entries) == 6 and len({e.trial_id for e in entries}) == 6  # both versions, each under its own ids
    rows = read_rounds(results)
    assert all(r == [0, 1, 2] for r in rows.groupby("trial_id")["round"].apply(sorted))  # every round once
    assert {
        "bald [model: albench-bald 0.1.0; strategy: albench-bald 0.1.0]",
        "entropy [model: albench-bald 0.2.0]",
    } <= set(rows["strategy"])


# -- bad input -----------------------------------------------------------------------------------------------------


def test_an_unknown_name_lists_the_known_ones_plugins_included(seen, bald_site):
    seen(bald_site)
    with pytest.raises(
        ConfigError, match=r"strategy 'bold' is unknown; known: .*bald.*\(plugins: bald from albench-bald 0.1.0"
    ):
        parse_grid({**_grid_data(), "strategies": ["bold"]})
    with pytest.raises(ConfigError, match=r"model 'mc_cn' is unknown; known: mc_cnn, resnet18, small_cnn \(plugins:"):
        parse_grid({**_grid_data(), "model": "mc_cn"})


def test_a_plugins_mistyped_setting_gets_the_strategys_own_settings_message(seen, bald_site):
    seen(bald_site)
    with pytest.raises(ConfigError) as error:
        parse_grid({**_grid_data(), "strategies": [{"name": "bald", "samples": "many"}]})
    assert "strategy 'bald': setting 'samples': Input should be a valid integer" in str(error.value)
    assert "bald takes: samples (int > 1, default 20), dropout (float > 0 < 1, default 0.5)" in str(error.value)
    with pytest.raises(ConfigError, match="strategy 'bald': unknown setting 'sample'"):
        parse_grid({**_grid_data(), "strategies": [{"name": "bald", "sample": 5}]})


def test_a_name_declared_twice_is_refused_naming_both_packages_and_other_grids_run(seen, tmp_path):
    site = tmp_path / "site"
    strategy = (
        "from albench.api import Strategy\nclass S(Strategy):\n    name = '{}'\n    def score(self, inputs): pass\n"
    )
    fake_package(
        site, "clash", "1.0", {"albench.strategies": {"entropy": "clash.s:S"}}, {"clash.s": strategy.format("entropy")}
    )
    fake_package(
        site, "twin-a", "1.0", {"albench.strategies": {"dup": "twin_a.s:S"}}, {"twin_a.s": strategy.format("dup")}
    )
    fake_package(
        site, "twin-b", "2.0", {"albench.strategies": {"dup": "twin_b.s:S"}}, {"twin_b.s": strategy.format("dup")}
    )
    seen(site)
    with pytest.raises(ConfigError, match=r"strategy 'entropy' is declared by albench \(built in\) and by clash 1.0"):
        parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["entropy"]})
    with pytest.raises(ConfigError, match=r"strategy 'dup' is declared by twin-a 1.0 .* and by twin-b 2.0"):
        parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["dup"]})
    assert parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["margin"]}).trials()


def test_a_plugin_that_fails_to_import_names_its_entry_point_package_and_error_and_other_grids_run(seen, tmp_path):
    site = fake_package(
        tmp_path / "site",
        "broken",
        "0.3.0",
        {"albench.strategies": {"needs_more": "broken.strategy:NeedsMore"}},
        {"broken.strategy": "import a_dependency_nobody_installed\n"},
    )
    seen(site)
    with pytest.raises(ConfigError) as error:
        parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["needs_more"]})
    assert (
        "strategy 'needs_more' (entry point 'albench.strategies: needs_more = broken.strategy:NeedsMore' of package "
        "broken 0.3.0) does not import on" in str(error.value)
    )
    assert "ModuleNotFoundError: No module named 'a_dependency_nobody_installed'" in str(error.value)
    assert parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["entropy"]}).trials()
    listed = albench("list", sites=(site,), cwd=tmp_path)
    assert listed.returncode == 0 and "needs_more [broken 0.3.0]" in listed.stdout
    assert "plugins that cannot be used" in listed.stdout and "a_dependency_nobody_installed" in listed.stdout


BROKEN_SCORES = """
import numpy as np
from typing import Literal
from albench.api import ShardResult, Strategy, StrategySettings

class Settings(StrategySettings):
    mode: Literal["short", "nan"] = "short"

class Broken(Strategy):
    name = "broken"
    Settings = Settings

    def score(self, inputs):
        n = len(inputs.pool_indices)
        if self.settings.mode == "short":
            return ShardResult(inputs.pool_indices, scores=np.ones(n - 1))
        scores = np.arange(n, dtype=float)
        scores[::7] = np.nan
        return ShardResult(inputs.pool_indices, scores=scores)
"""


@pytest.mark.slow
def test_a_plugin_whose_scores_have_the_wrong_shape_or_nan_fails_its_trial_alone_naming_it_and_the_round(tmp_path):
    site = fake_package(
        tmp_path / "site", "broken-scores", "0.0.1", {"albench.strategies": {"broken": "broken.s:Broken"}},
        {"broken.s": BROKEN_SCORES},
    )  # fmt: skip
    grid = GRID.replace("model: mc_cnn\n", "").replace(
        "[bald, entropy, random]", "[{name: broken, mode: short}, {name: broken, mode: nan}, entropy]"
    )
    work = work_dir(tmp_path, grid)
    done = albench("run", "grid.yaml", "--results", "results", "--in-process", sites=(site,), cwd=work)
    assert done.returncode == 2
    assert "2 of 3 trials failed; the others completed" in done.stderr
    assert (
        "StrategyOutputError: strategy 'broken' (plugin broken-scores 0.0.1) in round 0: score() returned scores of "
        "shape [299]; want [n] with n = 300, one per image" in done.stderr
    )
    assert (
        "StrategyOutputError: strategy 'broken' (plugin broken-scores 0.0.1) in round 0: score() returned non-finite "
        "scores (NaN or inf) for 43 of 300 images" in done.stderr
    )
    status = {e.label: e.status for e in read_all(work / "results")}
    assert status["digits/small/entropy/seed0"] == TrialStatus.DONE
    assert set(read_rounds(work / "results")["strategy"]) == {"entropy"}  # the failed trials left no row


def test_an_entry_point_that_is_not_a_strategy_is_refused_naming_it(seen, tmp_path):
    site = fake_package(
        tmp_path / "site",
        "broken",
        "1.0",
        {"albench.strategies": {"notone": "broken.s:thing"}},
        {"broken.s": "thing = 3\n"},
    )
    seen(site)
    with pytest.raises(ConfigError, match=r"strategy 'notone' \(entry point .* of broken 1.0\) is 3, not a subclass"):
        parse_grid({**_grid_data(), "model": "small_cnn", "strategies": ["notone"]})


TINY_DATA = """
import numpy as np
from sklearn.datasets import load_digits
from albench.api import Dataset, DatasetPlugin, TrainSpec

def load(root):
    digits = load_digits()
    images = (digits.images * 16).clip(0, 255).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    classes = tuple(str(c) for c in range(10))
    train, test = (images[:600], labels[:600]), (images[600:900], labels[600:900])
    return Dataset.from_arrays("tiny_digits", train, test, classes, (0.3,), (0.3,))

TINY = DatasetPlugin(load=load, model="small_cnn", train=TrainSpec(epochs=2, batch_size=32, lr=0.05, augment=False))
"""


@pytest.mark.slow
def test_a_dataset_plugin_brings_its_data_backbone_and_schedule_and_takes_no_options(tmp_path):
    site = fake_package(
        tmp_path / "site", "tiny-data", "1.0", {"albench.datasets": {"tiny_digits": "tiny.data:TINY"}},
        {"tiny.data": TINY_DATA},
    )  # fmt: skip
    grid = """
name: tiny
datasets: [tiny_digits]
regimes:
  small: {initial: 20, query: 20, budget: 60, subset: 200}
strategies: [entropy, random]
seeds: [0]
"""
    work = work_dir(tmp_path, grid)
    listed = albench("list", sites=(site,), cwd=work)
    assert "tiny_digits [tiny-data 1.0]" in listed.stdout
    done = albench("run", "grid.yaml", "--results", "results", "--in-process", sites=(site,), cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_rounds(work / "results")
    assert set(rows["dataset"]) == {"tiny_digits"} and set(rows["plugins"]) == {"dataset: tiny-data 1.0"}
    assert set(rows["model"]) == {"small_cnn"} and set(rows["n_labeled"]) == {20, 40, 60}

    (work / "grid.yaml").write_text(grid.replace("[tiny_digits]", "[{name: tiny_digits, image_size: 16}]"))
    refused = albench("plan", "grid.yaml", sites=(site,), cwd=work)
    assert refused.returncode == 2
    assert "dataset 'tiny_digits' is a plugin's (tiny-data 1.0): its loader takes no options, got image_size" in (
        refused.stderr
    )


def test_trials_on_a_plugins_backbone_or_data_never_fuse_and_a_plugin_strategy_alone_may(seen, bald_site):
    """Fused training runs the members' steps as one vmapped step, known right only for albench's own code."""
    from orchestrator.engine.group import fused_groups
    from tests.conftest import tiny_spec

    specs = [tiny_spec("entropy", seed) for seed in range(4)]
    assert [len(g) for g in fused_groups(specs, 2)] == [2, 2]
    on_plugin_model = [s.model_copy(update={"plugins": {"model": "albench-bald 0.1.0"}}) for s in specs]
    assert [len(g) for g in fused_groups(on_plugin_model, 2)] == [1, 1, 1, 1]
    on_plugin_data = [s.model_copy(update={"plugins": {"dataset": "tiny-data 1.0"}}) for s in specs]
    assert [len(g) for g in fused_groups(on_plugin_data, 4)] == [1, 1, 1, 1]
    # a plugin strategy that trains with cross-entropy alone (as bald does) trains like any other: it may fuse
    seen(bald_site)
    grid = {**_grid_data(), "model": "small_cnn", "strategies": ["bald", "entropy"], "seeds": [0, 1]}
    trials = parse_grid(grid).trials()
    assert {t.strategy.name for t in trials} == {"bald", "entropy"}
    assert [len(g) for g in fused_groups(trials, 4)] == [4]


def test_the_example_bald_scores_mutual_information_the_same_in_any_sharding(seen, bald_site, digits):
    """BALD's score is H[mean_t p_t] - mean_t H[p_t] over its seeded dropout masks, computed here independently
    (numpy, float64, one image and one pass at a time); an image's masks do not depend on its shard, so its score
    differs across shardings only by the backbone's float sums over other batches, and the picks not at all."""
    import numpy as np
    import torch

    from experiments.specs import StrategySpec
    from models.augment import Normalizer
    from strategies import build_strategy
    from strategies.base import ScoringInputs, merge_shards

    seen(bald_site)
    from albench_bald.model import McDropoutCNN

    strategy = build_strategy(StrategySpec(name="bald", settings={"samples": 6, "dropout": 0.4}))
    torch.manual_seed(0)
    backbone, normalize = McDropoutCNN(10, 1).eval(), Normalizer(digits.mean, digits.std)
    pool = np.arange(40, 100)

    def inputs(indices: np.ndarray, batch: int) -> ScoringInputs:
        return ScoringInputs(backbone, digits.train_images[indices], indices, normalize, batch, selection_key=11)

    whole = strategy.score(inputs(pool, 64)).scores
    thirds = merge_shards([strategy.score(inputs(part, 7)) for part in np.array_split(pool, 3)])
    np.testing.assert_allclose(thirds.scores, whole, rtol=1e-9)  # other batches: the backbone's float sums differ
    assert np.array_equal(
        strategy.select(thirds, 10, np.arange(40)),
        strategy.select(merge_shards([strategy.score(inputs(pool, 64))]), 10, np.arange(40)),
    )

    with torch.no_grad():
        embedding = backbone(normalize(digits.train_images[pool])).embedding.double().numpy()
    weight, bias = (t.detach().double().numpy() for t in (backbone.head.weight, backbone.head.bias))
    keep = strategy.masks(11, pool, embedding.shape[1]).numpy()
    expected = []
    for i in range(len(pool)):
        probabilities = []
        for t in range(6):
            logits = (embedding[i] * keep[t, i] / 0.6) @ weight.T + bias
            e = np.exp(logits - logits.max())
            probabilities.append(e / e.sum())
        p = np.array(probabilities)
        mean = p.mean(0)
        expected.append(-(mean * np.log(mean)).sum() + (p * np.log(p)).sum(1).mean())
    np.testing.assert_allclose(whole, np.maximum(expected, 0), rtol=1e-4, atol=1e-6)
    assert 0.3 < keep.mean() < 0.8 and np.ptp(whole) > 0  # masks drop about 40 %; the scores vary


@pytest.mark.ray
def test_a_scoring_shard_actor_that_cannot_start_on_a_plugin_fails_its_trial_as_that_plugin_error(node_with_2_cpus):
    """A shard actor on a node without the plugin dies in its constructor; Ray says so as an actor error, which
    `ShardPool` turns back into the plugin's error (no retry), rather than a lost actor (retried)."""
    import ray

    from experiments.plugins import PluginImportError
    from orchestrator.run.shards import plugin_error_of

    @ray.remote(num_cpus=1)
    class NeedsPlugin:
        def __init__(self) -> None:
            raise PluginImportError("strategy 'bald' (albench-bald 0.1.0) is not installed on node-b: ...")

        def score(self) -> int:
            return 1

    with pytest.raises(ray.exceptions.RayActorError) as died:
        ray.get(NeedsPlugin.remote().score.remote())
    error = plugin_error_of(died.value)
    assert isinstance(error, PluginImportError)
    assert str(error) == (
        "a scoring shard's actor did not start: strategy 'bald' (albench-bald 0.1.0) is not installed on node-b: ..."
    )
    assert plugin_error_of(RuntimeError("the actor died: its node was lost")) is None
