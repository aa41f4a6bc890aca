"""The trials albench <= 17506af left in a results folder, in today's terms (reading only).

Those versions hashed a trial's whole resolved spec into its id, every strategy's query settings and the
loss-prediction settings included. Their specs ("v0") are recorded in every Parquet row, so each old trial
is translated to today's spec and id (`spec_of_v0`); `Bookkeeper.carry_over` then files it under the new id,
keeping its rows, checkpoint and MLflow run. Their checkpoints (format 1) are read by `orchestrator.engine.checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.errors import AlbenchError
from experiments.results import read_trial_rows
from experiments.specs import DatasetSpec, RegimeSpec, ScoringSpec, TrainSpec, TrialSpec, canonical_form
from orchestrator.store.ledger import raw_entries
from strategies import STRATEGIES, resolve_strategy, settings_of

SET_ASIDE_DIR = "set-aside"  # RESULTS/set-aside/<old id>/: what --set-aside-old moves out of the way

# v0 `query` fields that were scoring mechanics or the views, not any strategy's setting
V0_QUERY_MECHANICS = {"score_batch_size"}
V0_QUERY_VIEWS = {"score_augmented"}


class UpgradeError(AlbenchError):
    """A record of an older albench that cannot be carried over."""


def is_v0_entry(entry: dict[str, Any]) -> bool:
    """Ledger entries of albench <= 17506af carry neither a spec nor a spec_version."""
    return "spec_version" not in entry


def spec_of_v0(text: str) -> TrialSpec:
    """Today's spec of a trial recorded by albench <= 17506af (the `spec` column of its Parquet rows)."""
    try:
        old = json.loads(text)
        name, train, query = old["strategy"], dict(old["train"]), dict(old["query"])
        settings_model = settings_of(name)
        given = {}
        for section in (train, query):
            for key in list(section):
                if key in settings_model.renamed_from:
                    given[settings_model.renamed_from[key]] = section.pop(key)
        for key in [k for k in train if k.startswith("lpl_")]:  # another family's settings: no effect on this one
            train.pop(key)
        unknown = set(query) - V0_QUERY_MECHANICS - V0_QUERY_VIEWS - _other_strategies_v0_names()
        if unknown:
            raise ValueError(f"unknown query fields {sorted(unknown)}")
        train_spec = TrainSpec(**train)
        return TrialSpec(
            experiment=old["experiment"],
            dataset=DatasetSpec(**old["dataset"]),
            model=old["model"],
            regime_name=old["regime_name"],
            regime=RegimeSpec(**old["regime"]),
            strategy=resolve_strategy(name, given, train_spec, train_spec),  # v0 recorded its detach epoch
            seed=old["seed"],
            train=train_spec,
            scoring=ScoringSpec(score_augmented=query.get("score_augmented", False)),
        )
    except AlbenchError as error:
        raise UpgradeError(f"its recorded spec does not validate today: {error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UpgradeError(f"its recorded spec cannot be read as albench 17506af's: {error}") from None


def _other_strategies_v0_names() -> set[str]:
    """Every v0 query field some strategy took: on another strategy's trial it had no effect."""
    return {old for cls in STRATEGIES.values() for old in cls.Settings.renamed_from}


@dataclass
class V0Trials:
    """The trials of albench <= 17506af in a results folder, sorted by what becomes of them."""

    carried: list[tuple[TrialSpec, dict, list[dict]]] = field(default_factory=list)  # (today's spec, entry, rows)
    unstarted: list[dict] = field(default_factory=list)  # never completed a round: nothing to keep
    problems: list[tuple[dict, str]] = field(default_factory=list)  # (entry, which trial and why)


def rounds_of(old: dict) -> str:
    return f"{old.get('rounds_done', 0)} of {old.get('n_rounds', '?')} rounds"


def find_v0_trials(results: Path) -> V0Trials:
    """Reads (never writes) the folder's old ledger entries and the specs their Parquet rows recorded."""
    found = V0Trials()
    for old in (raw for raw in raw_entries(results) if is_v0_entry(raw)):
        rows = read_trial_rows(results, old["trial_id"])
        if not rows and not old.get("checkpoint") and not old.get("rounds_done"):
            found.unstarted.append(old)
            continue
        try:
            if not rows:
                raise UpgradeError("it has a checkpoint but no Parquet rows, so the spec it computed is unknown")
            found.carried.append((spec_of_v0(rows[0]["spec"]), old, rows))
        except UpgradeError as error:
            found.problems.append((old, f"{old['label']} (trial {old['trial_id']}, {rounds_of(old)}): {error}"))
    return found


def cannot_carry_over(results: Path, problems: list[tuple[dict, str]]) -> str:
    lines = "\n  ".join(why for _, why in problems)
    return (
        f"{results} holds {len(problems)} trial(s) written by an older albench that cannot be carried over to this "
        f"version:\n  {lines}\nNothing was run. To keep their rounds, finish them with the albench that wrote them "
        "(the git_sha column of their Parquet rows) before upgrading; to keep their files aside and run the grid "
        f"with this version, rerun with --set-aside-old (they move to {results / SET_ASIDE_DIR}/)."
    )


def _flat(form: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in form.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(old: TrialSpec, new: TrialSpec) -> list[str]:
    """'strategy.detach_epoch: 4 -> 5': what two trials of one name compute differently."""
    before, after = _flat(canonical_form(old)), _flat(canonical_form(new))
    return [
        f"{key}: {before.get(key, 'default')} -> {after.get(key, 'default')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def same_name_elsewhere(results: Path, specs: list[TrialSpec]) -> list[str]:
    """A line per trial of the grid whose name an older trial in the folder has, computed differently: the grid
    changed (or a default's rule did), so its trial is new and the older one is kept as it is."""
    planned = {spec.trial_id for spec in specs}
    by_label = {spec.label: spec for spec in specs}
    lines = []
    for old in raw_entries(results):
        spec = by_label.get(old.get("label", ""))
        if spec is None or old["trial_id"] in planned or not old.get("spec"):
            continue
        changes = "; ".join(differences(TrialSpec.model_validate_json(old["spec"]), spec))
        lines.append(
            f"{spec.label}: new trial {spec.trial_id}; the folder keeps trial {old['trial_id']} of that name "
            f"({old.get('rounds_done', 0)} of {old.get('n_rounds', '?')} rounds), computed with {changes}. "
            "To continue that one instead, give the grid its values."
        )
    return lines
