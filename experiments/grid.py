"""Grid files: YAML that expands to trials (dataset x regime x strategy x seed), validated with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, NonNegativeFloat, PositiveInt, ValidationError, field_validator

from experiments.defaults import DEFAULTS, resolve_train
from experiments.errors import ConfigError
from experiments.specs import DatasetSpec, Frozen, QuerySpec, RegimeSpec, TrainSpec, TrialSpec


class ResourcesSpec(Frozen):
    """How each trial runs: what it asks the cluster for and its scoring heap (not part of a trial's identity)."""

    gpus_per_trial: NonNegativeFloat = 1.0
    cpus_per_trial: NonNegativeFloat = 1.0
    scoring_shards: PositiveInt = 1
    # `bounded`: scoring's peak memory is set by query.score_batch_size alone, at 1.2-2.1x the CPU scoring time
    # (strategies/scoring_heap.py); `fast` lets glibc's heap fragment by some tens of MiB over a long pass.
    scoring_heap: Literal["fast", "bounded"] = "fast"


class Grid(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[DatasetSpec] = Field(min_length=1)
    model: str | None = None  # else each dataset's default
    data_root: str | None = None  # else $ALBENCH_DATA_ROOT, else ~/data
    regimes: dict[str, RegimeSpec] = Field(min_length=1)
    strategies: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of each dataset's TrainSpec defaults
    query: QuerySpec = QuerySpec()
    resources: ResourcesSpec = ResourcesSpec()

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
    def _known_strategies(cls, value: list[str]) -> list[str]:
        from strategies import check_strategy_name

        for name in value:
            try:
                check_strategy_name(name)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return _unique(value, "strategy")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        from models import MODEL_NAMES

        if value is not None and value not in MODEL_NAMES:
            raise ValueError(f"model '{value}' is unknown; known: {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        return _unique(value, "seed")

    @field_validator("train")
    @classmethod
    def _known_train_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(TrainSpec.model_fields))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(TrainSpec.model_fields)}")
        return value

    def trials(self) -> list[TrialSpec]:
        """The grid's trials, ordered so that partial results already hold paired comparisons (seed-major)."""
        return [
            TrialSpec(
                experiment=self.name,
                dataset=dataset,
                model=self.model or DEFAULTS[dataset.name].model,
                regime_name=regime_name,
                regime=regime,
                strategy=strategy,
                seed=seed,
                train=resolve_train(DEFAULTS[dataset.name].train, self.train),
                query=self.query,
            )
            for dataset in self.datasets
            for regime_name, regime in self.regimes.items()
            for seed in self.seeds
            for strategy in self.strategies
        ]


def _unique(values: list, what: str) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} listed more than once: {', '.join(repeated)}")
    return values


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    return f"{where}: {message} (got {error.get('input')!r})"


def parse_grid(data: Any, source: str = "grid") -> Grid:
    """A Grid from parsed YAML; every problem is reported with its field path, the value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of fields (name, datasets, regimes, strategies, seeds, ...), "
            f"got {type(data).__name__}"
        )
    try:
        grid = Grid.model_validate(data)
        grid.trials()  # resolves every trial: train overrides are checked against each dataset's defaults
        return grid
    except ValidationError as error:
        problems = "\n  ".join(_describe(e) for e in error.errors())
        allowed = ", ".join(Grid.model_fields)
        raise ConfigError(f"{source}: invalid grid:\n  {problems}\n(grid fields: {allowed})") from None


def load_grid(path: str | os.PathLike) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_grid(data, str(path))
