"""Round 0 trained once per group: the trials that compute the same round-0 model share one fit of it.

Round 0 depends on the dataset, the model, the seed (initial weights and initial labeled set), the initial set's
size, the training settings and the training objective with the networks it trains; never on the query, the
subset or the budget. Trials that agree on all of these form a round-0 group (e.g. every cross-entropy strategy
of a seed). The runners train and test the group's round 0 once (`orchestrator.engine.trial.fit_round0`), store it as
a fit checkpoint, and start every member from it: the member's round-0 record takes the fit's numbers, and only
its query is its own.

Why: the paired design. Strategies of one seed are compared from the same round-0 model. On a CPU every member
computes that model bit for bit anyway, so sharing changes no record, only saves the group's duplicate training.
On a GPU the default kernels are not reproducible: one seed's round 0 of the ResNet-18 subset grid, the same
computation three times, gave 24.9 %, 24.9 % and 27.8 % on an H200. A shared fit makes pairing hold by
construction on any device.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from experiments.specs import SPEC_VERSION, TrialSpec
from strategies import build_strategy


def round0_form(spec: TrialSpec) -> dict[str, Any]:
    """What a trial's round 0 computes, as plain JSON values (defaults left out, as in the trial id)."""
    strategy = build_strategy(spec.strategy, spec.plugins.get("strategy"))
    objective = strategy.objective
    form = {
        "spec_version": SPEC_VERSION,
        "dataset": spec.dataset.model_dump(mode="json", exclude_defaults=True),
        "model": spec.model,
        "initial": spec.regime.initial,
        "seed": spec.seed,
        "train": spec.train.model_dump(mode="json", exclude_defaults=True),
        "objective": {"kind": type(objective).__qualname__, **{k: _plain(v) for k, v in vars(objective).items()}},
        "networks": {name: _qualname(build) for name, build in sorted(strategy.auxiliary_networks.items())},
    }
    # A plugin's backbone or data changes round 0; a plugin strategy's only where it trains with code of its own
    plugins = {kind: of for kind, of in spec.plugins.items() if kind != "strategy" or _trains_own_code(strategy)}
    return {**form, "plugins": plugins} if plugins else form


def _trains_own_code(strategy: Any) -> bool:
    """Whether a strategy's objective or auxiliary networks come from outside albench (a plugin's)."""
    modules = [
        type(strategy.objective).__module__,
        *(getattr(b, "__module__", "") for b in strategy.auxiliary_networks.values()),
    ]
    return any(not module.startswith(("models.", "strategies.")) for module in modules)


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str | type(None)) else repr(value)


def _qualname(build: Any) -> str:
    return f"{getattr(build, '__module__', '')}.{getattr(build, '__qualname__', repr(build))}"


def round0_key(spec: TrialSpec) -> str:
    """16 hex digits of the SHA-256 of `round0_form`: equal for exactly the trials that share round 0."""
    text = json.dumps(round0_form(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def round0_groups(specs: list[TrialSpec]) -> dict[str, list[TrialSpec]]:
    """The grid's trials by round-0 key, in grid order."""
    groups: dict[str, list[TrialSpec]] = {}
    for spec in specs:
        groups.setdefault(round0_key(spec), []).append(spec)
    return groups
