"""Frozen, typed specs: what a trial is. A trial's id is a stable hash of its fully resolved spec.

Flow: grid file -> `experiments.grid.expand` -> TrialSpec (one per dataset x regime x strategy x seed)
-> `orchestrator.trial.run_trial` -> RoundRecord per round -> Parquet row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator


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
    lr_gamma: float = 0.1
    augment: bool = True  # random crop with padding + horizontal flip, batched on the device
    crop_padding: int = Field(default=4, ge=0)
    hflip: bool = True
    lpl_margin: float = 1.0  # Learning-Loss margin-ranking loss (LL4AL): margin xi
    lpl_weight: float = 1.0  # ... and its weight lambda
    lpl_detach_epoch: int = 120  # from the epoch after this one, the taps are detached from the backbone
    reinit_each_round: bool = False  # the references warm-start; re-initialising is an option
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast of the training forward (scoring stays fp32)


class QuerySpec(Frozen):
    """How the pool is scored; recorded so a result says which variant produced it."""

    gradnorm_aggregate: Literal["layer_sum", "l2"] = "layer_sum"  # public code: sum of per-tensor norms
    expected_top_k: PositiveInt | None = None  # exp_gradnorm: sum over the k likeliest classes only
    score_augmented: bool = False  # score train-transform views (the LPLgrad SVHN script) instead of test views
    score_batch_size: PositiveInt = 256  # chunk size of scoring: bounds its peak memory
    fisher_mask_size: PositiveInt | None = None  # fishermask: K entries; None = last-layer weight + 1,024
    fisher_mask_whole_last_layer: bool = True  # fishermask: the mask always keeps the whole last-layer weight
    fisher_mask_samples: PositiveInt = 1024  # fishermask: random pool points of the Fisher-diagonal estimate
    fisher_lambda: PositiveFloat = 1.0  # fishermask: the greedy's ridge (the reference's lamb)


class TrialSpec(Frozen):
    """Everything that determines a trial's results. The data root is not part of it: moving data changes nothing."""

    experiment: str
    dataset: DatasetSpec
    model: str
    regime_name: str
    regime: RegimeSpec
    strategy: str
    seed: int
    train: TrainSpec
    query: QuerySpec = QuerySpec()

    @property
    def trial_id(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON of the spec."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.regime_name}/{self.strategy}/seed{self.seed}"
