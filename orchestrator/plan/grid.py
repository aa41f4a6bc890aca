"""Grid files: YAML that expands to trials (dataset x regime x strategy x seed), every field typed and validated
before anything is derived from it, with errors that name the field, the value and what is allowed.

    strategies: [entropy, {name: bait, lam: 0.01}, {name: bait, lam: 1.0}]   # per-strategy settings
    query: {score_augmented: true, aggregate: l2}   # the views, and settings for every strategy that takes them
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from experiments.datasets import defaults_of
from experiments.defaults import resolve_train
from experiments.errors import ConfigError
from experiments.specs import DatasetSpec, Frozen, RegimeSpec, ScoringSpec, TrainSpec, TrialSpec
from strategies import STRATEGIES, resolve_strategy, settings_of, validate_settings, variant_label
from strategies.base import SCORE_BATCH_SIZE


class ResourcesSpec(Frozen):
    """How each trial runs: what it asks the cluster for and its scoring mechanics (not part of a trial's id)."""

    gpus_per_trial: NonNegativeFloat = 1.0
    cpus_per_trial: NonNegativeFloat = 1.0
    scoring_shards: PositiveInt = 1
    # `bounded`: scoring's peak memory is set by score_batch_size alone, at 1.2-2.1x the CPU scoring time
    # (strategies/scoring_heap.py); `fast` lets glibc's heap fragment by some tens of MiB over a long pass.
    scoring_heap: Literal["fast", "bounded"] = "fast"
    # images per scoring chunk: bounds its peak memory. "auto": on a GPU, the chunks after the first as large as
    # the trial's memory allows (strategies/chunk_sizing.py); on a CPU the default. Off by default: not yet run
    # on a GPU.
    score_batch_size: PositiveInt | Literal["auto"] = SCORE_BATCH_SIZE
    # trials per fused group: up to `fuse` trials that train alike (same data, model, schedule, objective and
    # labeled counts) train as one, their networks stacked (orchestrator/engine/group.py), in one actor with one trial's
    # resources. 1: every trial alone. Not yet run on a GPU: off by default.
    fuse: PositiveInt = 1
    # plugin package folders sent to every Ray worker of a run (relative to the grid file), as `albench run --ship`
    # does: for clusters whose nodes do not have the plugin installed (orchestrator/run/ship.py)
    ship: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _fuse_without_shards(self) -> Self:
        if self.fuse > 1 and self.scoring_shards > 1:
            raise ValueError(
                f"fuse: {self.fuse} with scoring_shards: {self.scoring_shards} is not supported: a fused group "
                "scores in its own actor. Set fuse: 1 to shard scoring, or scoring_shards: 1 to fuse"
            )
        return self

    @field_validator("score_batch_size", mode="before")
    @classmethod
    def _images_or_auto(cls, value: object) -> object:
        """One message for both halves of the union, not one per half."""
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise ValueError("Input should be a positive number of images or 'auto'")

    @field_validator("gpus_per_trial")
    @classmethod
    def _a_share_or_whole_gpus(cls, value: float) -> float:
        """Ray gives a trial a share of one GPU (0.25: four trials per GPU) or whole GPUs, never 1.5."""
        if value > 1 and not float(value).is_integer():
            raise ValueError(
                f"{value:g} GPUs per trial cannot be scheduled: a trial takes a share of one GPU (0 < g <= 1, e.g. "
                f"0.5 packs 2 trials per GPU, 0.25 packs 4) or a whole number of GPUs (2, 3, ...). "
                f"Use {int(value)} or {int(value) + 1}"
            )
        return value


# The grid's `train:` section: any TrainSpec field, each typed and constrained as there, all optional.
TrainOverrides = create_model(
    "TrainOverrides",
    __base__=Frozen,
    **{
        name: (info.annotation | None, FieldInfo.merge_field_infos(info, default=None))
        for name, info in TrainSpec.model_fields.items()
    },
)


class StrategyEntry(Frozen):
    """One item of `strategies:`, a name or {name: ..., <setting>: ...}; its settings checked by the strategy."""

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "settings" not in value:
            return {"name": value.get("name"), "settings": {k: v for k, v in value.items() if k != "name"}}
        return value

    @model_validator(mode="after")
    def _known(self) -> StrategyEntry:
        try:
            validate_settings(self.name, self.settings)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self

    @property
    def label(self) -> str:
        return variant_label(self.name, self.settings)


class Grid(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[DatasetSpec] = Field(min_length=1)
    model: str | None = None  # else each dataset's default
    data_root: str | None = None  # else $ALBENCH_DATA_ROOT, else ~/data
    regimes: dict[str, RegimeSpec] = Field(min_length=1)
    strategies: list[StrategyEntry] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    train: TrainOverrides = TrainOverrides()  # overrides of each dataset's TrainSpec defaults
    query: dict[str, Any] = Field(default_factory=dict)  # score_augmented, and settings shared by the strategies
    resources: ResourcesSpec = ResourcesSpec()

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        """Grid files of albench <= 17506af still run: their `train: {lpl_*}` become strategy settings, their
        `query: {score_batch_size}` a resource."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        train, query, resources = (data.get(k) for k in ("train", "query", "resources"))
        if isinstance(train, dict) and any(k.startswith("lpl_") for k in train):
            older = {k: v for k, v in train.items() if k.startswith("lpl_")}
            data["train"] = {k: v for k, v in train.items() if k not in older}
            data["query"] = {**older, **(query if isinstance(query, dict) else {})}
        query = data.get("query")
        if isinstance(query, dict) and "score_batch_size" in query and isinstance(resources or {}, dict):
            data["query"] = {k: v for k, v in query.items() if k != "score_batch_size"}
            data["resources"] = {"score_batch_size": query["score_batch_size"], **(resources or {})}
        return data

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_to_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[DatasetSpec]) -> list[DatasetSpec]:
        from experiments.datasets import complete_dataset_spec

        try:
            return [complete_dataset_spec(v) for v in value]
        except ConfigError as error:
            raise ValueError(str(error)) from None

    @field_validator("strategies")
    @classmethod
    def _listed_once(cls, value: list[StrategyEntry]) -> list[StrategyEntry]:
        _unique([entry.label for entry in value], "strategy")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        from models import REGISTRY

        if value is not None:
            try:
                REGISTRY.get(value)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        return _unique(value, "seed")

    @field_validator("query")
    @classmethod
    def _known_query_settings(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        takes = {entry.name: settings_of(entry.name) for entry in info.data.get("strategies", [])}
        for key in value:
            if key in ScoringSpec.model_fields or any(key in s.model_fields for s in takes.values()):
                continue
            if any(key in cls.Settings.renamed_from for cls in STRATEGIES.values()):
                continue  # an older grid's name: applies where a listed strategy took it, else had no effect
            settings = "; ".join(f"{name}: {', '.join(s.model_fields) or '-'}" for name, s in takes.items())
            raise ValueError(
                f"'{key}' is a setting of none of this grid's strategies (theirs: {settings}; "
                f"and for every strategy: {', '.join(ScoringSpec.model_fields)})"
            )
        return value

    def strategy_settings(self, entry: StrategyEntry) -> dict[str, Any]:
        """The grid-wide `query` settings this strategy takes (by name or older name), then the entry's own."""
        model = settings_of(entry.name)
        shared = {}
        for key, value in self.query.items():
            if key in model.model_fields:
                shared[key] = value
            elif key in model.renamed_from:
                shared.setdefault(model.renamed_from[key], value)
        return {**shared, **entry.settings}

    def trials(self) -> list[TrialSpec]:
        """The grid's trials, ordered so that partial results already hold paired comparisons (seed-major)."""
        scoring = ScoringSpec(**{k: v for k, v in self.query.items() if k in ScoringSpec.model_fields})
        overrides = self.train.model_dump(exclude_unset=True, exclude_none=True)
        trials = []
        for dataset in self.datasets:
            defaults = defaults_of(dataset.name)
            reference, model = defaults.train, self.model or defaults.model
            train = resolve_train(reference, overrides)
            strategies = [
                resolve_strategy(entry.name, self.strategy_settings(entry), train, reference, entry.label)
                for entry in self.strategies
            ]
            plugins = {s.name: plugins_of(dataset.name, model, s.name) for s in strategies}
            for regime_name, regime in self.regimes.items():
                for seed in self.seeds:
                    for strategy in strategies:
                        trials.append(
                            TrialSpec(
                                experiment=self.name,
                                dataset=dataset,
                                model=model,
                                regime_name=regime_name,
                                regime=regime,
                                strategy=strategy,
                                seed=seed,
                                train=train,
                                scoring=scoring,
                                plugins=plugins[strategy.name],
                            )
                        )
        _distinct(trials)
        return trials


def plugins_of(dataset: str | None, model: str | None, strategy: str | None) -> dict[str, str]:
    """{kind: 'package version'} of the named things that are plugins' (what `TrialSpec.plugins` records)."""
    from experiments.datasets import REGISTRY as DATASETS
    from models import REGISTRY as MODELS
    from strategies import REGISTRY as STRATEGIES

    found = {
        "dataset": None if dataset is None else DATASETS.provenance(dataset),
        "model": None if model is None else MODELS.provenance(model),
        "strategy": None if strategy is None else STRATEGIES.provenance(strategy),
    }
    return {kind: provenance for kind, provenance in found.items() if provenance}


def _unique(values: list, what: str) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} listed more than once: {', '.join(repeated)}")
    return values


def _distinct(trials: list[TrialSpec]) -> None:
    """Two entries that compute the same thing (a setting given at its resolved default, two regimes alike)."""
    seen: dict[str, TrialSpec] = {}
    for spec in trials:
        twin = seen.setdefault(spec.trial_id, spec)
        if twin is not spec:
            raise ConfigError(
                f"{twin.label} and {spec.label} are the same trial (their settings resolve alike); list it once"
            )


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    named = isinstance(error.get("input"), dict) or f"'{error.get('input')}'" in message
    if error["type"] == "value_error" and named:
        return f"{where}: {message}"  # the message names the value (a whole mapping would only be noise)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field; allowed: {', '.join(_allowed_at(error['loc']))}"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    return f"{where}: {message} (got {error.get('input')!r})"


def _allowed_at(loc: tuple) -> list[str]:
    sections = {"train": TrainOverrides, "resources": ResourcesSpec}
    model = sections.get(loc[0], Grid) if len(loc) > 1 else Grid
    return list(model.model_fields)


def parse_grid(data: Any, source: str = "grid") -> Grid:
    """A Grid from parsed YAML; every problem is reported with its field path, the value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of fields (name, datasets, regimes, strategies, seeds, ...), "
            f"got {type(data).__name__}"
        )
    try:
        grid = Grid.model_validate(data)
        grid.trials()  # resolves every trial: each strategy's settings against each dataset's schedule
        return grid
    except ValidationError as error:
        problems = "\n  ".join(_describe(e) for e in error.errors())
        raise ConfigError(f"{source}: invalid grid:\n  {problems}") from None
    except ConfigError as error:
        raise ConfigError(f"{source}: invalid grid:\n  {error}") from None


def load_grid(path: str | os.PathLike) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_grid(data, str(path))


def resolved_grid(grid: Grid) -> dict:
    """The grid as albench understood it: every field with its default, and each trial's id, label and spec."""
    return {
        "grid": grid.model_dump(mode="json"),
        "trials": [
            {"trial_id": t.trial_id, "label": t.label, "spec": t.model_dump(mode="json")} for t in grid.trials()
        ],
    }
