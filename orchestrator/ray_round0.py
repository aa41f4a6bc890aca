"""The first phase of a Ray run: each round-0 group's one fit (`orchestrator.round0`), before any trial starts.

A Tune run's trials are fixed when it starts, and one cannot wait on another, so the fits the pending trials
need run first, as a Tune run of their own (one actor and bundle per group, retried like trials). Each fit is
reported as a Tune checkpoint in the run's storage, so it reaches the trials on any node the way trial
checkpoints do; the bookkeeper records where it is, so a later run of the grid reuses it. A fit that fails
fails every member of its group with its error; the other groups go on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import torch
from ray import tune

from experiments.datasets import Dataset
from experiments.errors import AlbenchError
from experiments.specs import TrialSpec
from orchestrator.bookkeeper import Bookkeeper, Planned
from orchestrator.checkpoint import write_fit_dir
from orchestrator.gpu import out_of_memory
from orchestrator.grid import Grid
from orchestrator.inputs import dataset_key
from orchestrator.ray_cluster import ALBENCH_ERROR, checkpoint_uri, claim_device, error_of, run_config
from orchestrator.trial import fit_round0, trial_threads


def fit_round0_groups(
    grid: Grid,
    keeper: Bookkeeper,
    pending: list[Planned],
    keys: dict[str, str],  # trial id -> round-0 key
    datasets: dict[str, Dataset],
    bundle: dict[str, float],
    storage: str,
    max_failures: int,
    report: Callable[[str], None],
) -> list[Planned]:
    """Trains the fits that pending trials at round 0 still need; returns the pending trials that can start."""
    needed: dict[str, list[Planned]] = {}
    for item in pending:
        key = keys[item.spec.trial_id]
        if item.entry.rounds_done == 0 and keeper.round0_fit(key) is None:
            needed.setdefault(key, []).append(item)
    if not needed:
        return pending
    report(f"round 0: {len(needed)} group fits to train for {sum(map(len, needed.values()))} trials")
    errors: dict[str, str] = {}
    configs = [
        {
            "round0_key": key,
            "spec": members[0].spec.model_dump_json(),
            "dataset_key": dataset_key(members[0].spec),
            "score_batch_size": grid.resources.score_batch_size,
        }
        for key, members in needed.items()
    ]
    trainable = tune.with_resources(
        tune.with_parameters(fit_group, datasets=datasets, bundle=bundle), tune.PlacementGroupFactory([bundle])
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"group": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda t: f"round0-{t.config['group']['round0_key']}",
            trial_dirname_creator=lambda t: t.config["group"]["round0_key"],
            reuse_actors=True,
        ),
        run_config=run_config(f"{grid.name}-round0", storage, max_failures, _callback(keeper, needed, errors, report)),
    )
    tuner.fit()
    for key, members in needed.items():
        if keeper.round0_fit(key) is None:
            why = errors.get(key, "its round-0 fit did not finish")
            for item in members:
                keeper.fail(item, f"round 0 of its group {key}: {why}")
            report(f"round 0 of group {key}: FAILED ({why}); its {len(members)} trials fail with it")
    return [p for p in pending if p.entry.rounds_done > 0 or keeper.round0_fit(keys[p.spec.trial_id]) is not None]


def _callback(keeper: Bookkeeper, needed: dict[str, list[Planned]], errors: dict[str, str], report):
    class Round0Callback(tune.Callback):
        """Driver-side: files each group's fit with the bookkeeper, or keeps its error for its members."""

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            key = trial.config["group"]["round0_key"]
            keeper.record_round0_fit(key, checkpoint_uri(checkpoint), [p.spec.trial_id for p in needed[key]])
            n = len(needed[key])
            report(f"round 0 of group {key} ({n} trial{'s' * (n > 1)}) trained once")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(ALBENCH_ERROR):
                errors[trial.config["group"]["round0_key"]] = result[ALBENCH_ERROR]

        def on_trial_error(self, iteration, trials, trial, **info):
            errors[trial.config["group"]["round0_key"]] = error_of(trial)

    return Round0Callback()


def fit_group(config: dict, datasets: dict[str, Dataset], bundle: dict[str, float]) -> None:
    """The trainable of a group: round 0's fit step on the group's first member's spec, reported as a checkpoint."""
    config = config["group"]
    device = claim_device(bundle)  # first: before anything touches CUDA
    spec = TrialSpec.model_validate_json(config["spec"])
    torch.set_num_threads(trial_threads(bundle.get("CPU", 1)))
    try:
        fit = fit_round0(spec, datasets[config["dataset_key"]], config["round0_key"], device)
    except torch.OutOfMemoryError as error:
        message = out_of_memory(error, bundle.get("GPU", 1.0), config["score_batch_size"], spec.train.batch_size)
        tune.report({ALBENCH_ERROR: f"{type(message).__name__}: {message}"})
        return
    except AlbenchError as error:  # deterministic (divergence): a retry would fail alike
        tune.report({ALBENCH_ERROR: f"{type(error).__name__}: {error}"})
        return
    with tempfile.TemporaryDirectory() as directory:
        write_fit_dir(fit, directory)
        tune.report({"test_accuracy": fit.fit.test_accuracy}, checkpoint=tune.Checkpoint.from_directory(directory))
