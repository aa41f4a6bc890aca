"""Frozen, typed specs: what a trial is, and its identity.

Flow: grid file -> `orchestrator.plan.grid.Grid.trials()` -> TrialSpec (one per dataset x regime x strategy x seed)
-> `orchestrator.engine.trial.run_trial` -> RoundRecord per round -> Parquet row.

A trial's id hashes a canonical form of exactly what determines its computation (see `canonical_form`):
fields equal to their default are left out, so a new setting whose default reproduces today's behaviour
leaves every existing id unchanged. Names (experiment, regime name, labels) never enter it, nor do
resources, paths or bookkeeping, which live outside the spec.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

# Bumped only for a deliberate change of what an unchanged spec computes; it enters every id.
SPEC_VERSION = 1

SettingValue = bool | int | float | str | None


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(Frozen):
    """Which dataset, plus the options that change its content (and therefore the trial id)."""

    name: str
    path: str | None = None  # imagefolder: the folder, absolute or relative to the data root
    image_size: PositiveInt | None = None  # caltech101 / imagefolder: square size images are resized to
    test_fraction: float | None = Field(default=None, gt=0, lt=1)  # seeded split where no test set exists
    split_seed: int = 0


class RegimeSpec(Frozen):
    """An AL budget regime (paper Table II): start with `initial`, label `query` per round up to `budget`."""

    initial: PositiveInt
    query: PositiveInt
    subset: PositiveInt | None = None  # size of the random unlabeled subset scored each round; None = whole pool
    budget: PositiveInt

    @model_validator(mode="after")
    def _budget_reachable(self) -> RegimeSpec:
        if self.budget < self.initial:
            raise ValueError(f"budget ({self.budget}) must be >= initial ({self.initial})")
        if self.subset is not None and self.subset < self.query:
            raise ValueError(
                f"subset ({self.subset}) must be >= query ({self.query}): a round labels query images of it"
            )
        return self

    @property
    def labeled_counts(self) -> list[int]:
        """Labeled-set size at each round's test; the last query is truncated to land exactly on the budget."""
        counts = [self.initial]
        while counts[-1] < self.budget:
            counts.append(min(counts[-1] + self.query, self.budget))
        return counts


class TrainSpec(Frozen):
    """Training of one round. Defaults per dataset live in `experiments.defaults` (from PAPER.md)."""

    epochs: PositiveInt
    batch_size: PositiveInt
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    lr_milestones: tuple[int, ...] = ()  # epochs after which the LR is multiplied by lr_gamma
    lr_gamma: float = Field(default=0.1, gt=0)
    augment: bool = True  # random crop with padding + horizontal flip, batched on the device
    crop_padding: int = Field(default=4, ge=0)
    hflip: bool = True
    reinit_each_round: bool = False  # the references warm-start; re-initialising is an option
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast of the training forward (scoring stays fp32)
    # torch's deterministic algorithms, cuDNN deterministic without benchmark, cuBLAS's fixed workspace
    # (orchestrator/engine/gpu.py): a GPU trial then repeats bit for bit on the same GPU and software; CPU trials do
    # anyway
    deterministic: bool = False
    # How a CUDA device runs each training step: "eager" launches its kernels one by one from Python; "captured"
    # replays the whole step from CUDA graphs (models/captured.py). The same step on the same batches; it is
    # left out of the trial's id (`canonical_form`) because it changes only the float rounding of the SGD update
    # on a GPU, as GPU kernels do anyway. A CPU always trains eagerly, so CPU records do not depend on it.
    step: Literal["eager", "captured"] = "eager"

    @model_validator(mode="after")
    def _captured_is_not_deterministic(self) -> TrainSpec:
        if self.step == "captured" and self.deterministic:
            raise ValueError(
                "train.step = 'captured' with train.deterministic = true: a deterministic GPU trial repeats eager "
                "kernels bit for bit, and the captured step rounds its SGD update differently. Drop one of them: "
                "step: eager for bit-exact GPU repeats, or deterministic: false for the captured step's speed"
            )
        return self


class ScoringSpec(Frozen):
    """The views every strategy scores: test-time by default, train-transform views if `score_augmented`."""

    score_augmented: bool = False  # the LPLgrad SVHN script; only where the trial trains with augmentation


class StrategySpec(Frozen):
    """A strategy and its own settings: those that differ from the strategy's defaults, resolved and validated
    by `strategies.resolve_strategy`. `label` names the variant in results (e.g. 'bait(lam=0.01)')."""

    name: str
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    label: str = ""

    @property
    def shown(self) -> str:
        return self.label or self.name


class TrialSpec(Frozen):
    """Everything that determines a trial's results, plus the names results are filed under."""

    experiment: str  # the grid's name: a label, not part of the id
    dataset: DatasetSpec
    model: str
    regime_name: str  # a label, not part of the id
    regime: RegimeSpec
    strategy: StrategySpec
    seed: int
    train: TrainSpec
    scoring: ScoringSpec = ScoringSpec()
    # The plugins the trial uses, by kind: {"strategy": "albench-bald 0.1.0"} (package and version). Part of the id,
    # so a new version of a plugin makes new trials; empty for albench's own, and then outside the id and the JSON
    # (a built-in trial's recorded spec reads as before plugins existed).
    plugins: dict[Literal["strategy", "model", "dataset"], str] = Field(
        default_factory=dict, exclude_if=lambda v: not v
    )

    @property
    def trial_id(self) -> str:
        """16 hex digits of the SHA-256 of the canonical form."""
        text = json.dumps(canonical_form(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.regime_name}/{self.strategy.shown}/seed{self.seed}"


# training settings that choose how a device executes the same computation, not what it computes: outside the id
EXECUTION_ONLY = frozenset({"step"})


def _without_defaults(model: Frozen) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True)


def canonical_form(spec: TrialSpec) -> dict[str, Any]:
    """What a trial computes, as plain JSON values, with every field at its default left out."""
    form = {
        "spec_version": SPEC_VERSION,
        "dataset": _without_defaults(spec.dataset),
        "model": spec.model,
        "regime": _without_defaults(spec.regime),
        "seed": spec.seed,
        "strategy": {"name": spec.strategy.name, **spec.strategy.settings},
        "train": {key: value for key, value in _without_defaults(spec.train).items() if key not in EXECUTION_ONLY},
        "scoring": _without_defaults(spec.scoring),
        "plugins": dict(sorted(spec.plugins.items())),
    }
    return {key: value for key, value in form.items() if value != {}}
