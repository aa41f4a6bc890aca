"""Fused trials: a group of trials that train alike advances round by round as one (`resources.fuse`).

In every round, trials of one fusion group have labeled sets of the same size and the same schedule, model and
objective, so their fit steps can run as one fused training (`models.fused_training`: the members' networks
stacked and stepped together, one kernel per layer for the whole group). Everything else stays each member's
own, exactly as in `orchestrator.engine.trial.run_trial`: its spec, seed and random streams, its labeled set, its
query, its records, its checkpoint (`on_round` after each of its rounds) and its round-0 fit where its round-0
group has one.

A member that fails (it diverges, or its query raises an albench error) leaves the group with its error
(`on_failed`); the others go on. Members may stand at different rounds (a group resumed from checkpoints written
at different times): each step fits the members that are furthest behind, so they catch up and go on together.

What "deterministic" means for a fused trial: on the CPU, a fused trial is a pure function of its spec, its seed
and the members fitted with it each round (a batched kernel's rounding depends on how many it batches; the rows'
`fused_with` column says how many a round's fit had). The same group reproduces every record bit for bit. The
runners checkpoint a group once per step, every member at the same round, so an interrupted group resumes every
member from its last round and ends bit for bit as the uninterrupted group. Members resumed from different rounds
(trials started unfused, then fused) catch up first: correct, but equal to an uninterrupted run only within
float tolerance, as a fused trial is to the same trial run alone. Fusion is a resource, not part of the id.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from experiments.datasets import Dataset
from experiments.errors import AlbenchError, ConfigError
from experiments.records import RoundRecord
from experiments.specs import TrialSpec
from models.fused_training import FusedMember, train_round_fused
from models.networks import Networks
from orchestrator.engine.gpu import GpuMeter, set_deterministic
from orchestrator.engine.query import ShardMapper
from orchestrator.engine.records import Fit, Round0Fit, TrialState
from orchestrator.engine.round0 import round0_form
from orchestrator.engine.streams import generator
from orchestrator.engine.trial import (
    TrialContext,
    assess_fit,
    build_networks,
    fit_round,
    initial_state,
    labeled_indices,
    load_weights,
    metered,
    query_round,
)
from strategies.base import SCORE_BATCH_SIZE

meter_of = GpuMeter  # what measures a step's GPU use (a name of this module, so a test can stand in for it)


def fusion_form(spec: TrialSpec) -> dict[str, Any]:
    """What must be equal for trials to train in lockstep: round 0's form without the seed and the initial set's
    size (each member has its own), with the whole schedule of labeled counts (the same size every round)."""
    form = {k: v for k, v in round0_form(spec).items() if k not in ("seed", "initial")}
    return {**form, "labeled_counts": list(spec.regime.labeled_counts)}


def fusion_key(spec: TrialSpec) -> str:
    """16 hex digits of the SHA-256 of `fusion_form`: equal for exactly the trials that can fuse."""
    text = json.dumps(fusion_form(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fused_groups(specs: list[TrialSpec], per_group: int) -> list[list[TrialSpec]]:
    """The trials in groups of at most `per_group` that can fuse, in grid order (1: every trial alone)."""
    by_key: dict[str, list[TrialSpec]] = {}
    for spec in specs:
        by_key.setdefault(fusion_key(spec) if fusable(spec) else spec.trial_id, []).append(spec)
    return [members[i : i + per_group] for members in by_key.values() for i in range(0, len(members), per_group)]


def fusable(spec: TrialSpec) -> bool:
    """Whether the trial may train fused: a plugin's backbone or training code trains alone, as fused training
    (one vmapped step) is known right only for albench's own (a backbone's dropout, say, cannot run under it)."""
    return not ({"model", "dataset"} & set(spec.plugins) or ("strategy" in spec.plugins and _plugin_trains(spec)))


def _plugin_trains(spec: TrialSpec) -> bool:
    return "strategy" in round0_form(spec).get("plugins", {})


@dataclass
class _Member:
    ctx: TrialContext
    nets: Networks
    state: TrialState
    round0: Round0Fit | None
    n_rounds: int
    failed: bool = False

    @property
    def spec(self) -> TrialSpec:
        return self.ctx.spec


def run_group(
    specs: list[TrialSpec],
    dataset: Dataset,
    *,
    device: str | torch.device = "cpu",
    states: dict[str, TrialState | None] | None = None,
    round0s: dict[str, Round0Fit | None] | None = None,
    on_step: Callable[[list[TrialState]], None] | None = None,
    on_failed: Callable[[str, AlbenchError], None] | None = None,
    max_rounds: int | None = None,
    n_shards: int = 1,
    map_shards: ShardMapper | None = None,
    score_batch_size: int | Literal["auto"] = SCORE_BATCH_SIZE,
) -> dict[str, TrialState]:
    """Runs the members' remaining rounds (each from its state in `states`, if any). Calls on_step(states) once
    the members fitted together have all finished their round (so a checkpoint of the group holds them all at one
    round), and on_failed(trial_id, error) when a member leaves the group. Returns every member's state."""
    keys = {fusion_key(spec) for spec in specs}
    if len(keys) != 1:
        raise ConfigError(
            "these trials cannot train as one fused group (they differ in dataset, model, training settings, "
            f"objective or labeled counts): {', '.join(s.label for s in specs)}"
        )
    states, round0s = states or {}, round0s or {}
    set_deterministic(specs[0].train.deterministic)
    first = TrialContext.create(
        specs[0], dataset, device, n_shards=n_shards, map_shards=map_shards, score_batch_size=score_batch_size
    )
    members = [
        _member(first.sharing(spec, dataset), states.get(spec.trial_id), round0s.get(spec.trial_id), max_rounds)
        for spec in specs
    ]
    while live := [m for m in members if not m.failed and m.state.rounds_done < m.n_rounds]:
        r = min(m.state.rounds_done for m in live)
        due = [m for m in live if m.state.rounds_done == r]
        for m in due:
            if m.spec.train.reinit_each_round and r > 0:
                m.nets = build_networks(m.spec, dataset, m.ctx.strategy, device)
        from_round0 = [m for m in due if r == 0 and m.round0 is not None]
        to_fit = [m for m in due if m not in from_round0]
        finished: list[tuple[_Member, RoundRecord]] = []
        with meter_of(first.images.device) as meter:  # the step's GPU use: the fused fit and every query in it
            fits = _fit_together(to_fit, r)
            for m in due:
                try:
                    finished.append((m, _finish_round(m, r, fits.get(m.spec.trial_id), len(to_fit))))
                except AlbenchError as error:
                    m.failed = True
                    if on_failed is not None:
                        on_failed(m.spec.trial_id, error)
        advanced = []
        for m, record in finished:
            m.state.records.append(metered(record, meter.result, first.images.device))
            m.state.weights = m.nets.weights()
            advanced.append(m.state)
        if on_step is not None and advanced:
            on_step(advanced)
    return {m.spec.trial_id: m.state for m in members}


def _member(ctx: TrialContext, state: TrialState | None, round0: Round0Fit | None, max_rounds: int | None) -> _Member:
    spec, dataset = ctx.spec, ctx.dataset
    nets = build_networks(spec, dataset, ctx.strategy, ctx.images.device)
    if state is None:
        state = initial_state(spec, dataset)
    else:
        fix = "delete the checkpoint to rerun the trial from its first round"
        load_weights(nets, state.weights, f"the checkpoint of trial {spec.trial_id}", fix)
    n = len(spec.regime.labeled_counts)
    return _Member(ctx, nets, state, round0, n if max_rounds is None else min(max_rounds, n))


def _fit_together(members: list[_Member], r: int) -> dict[str, Fit | AlbenchError]:
    """Round r's fit of every member: fused when there are two or more, else the member's own fit step."""
    if len(members) == 1:
        m = members[0]
        try:
            return {m.spec.trial_id: fit_round(m.ctx, m.nets, labeled_indices(m.state), r)}
        except AlbenchError as error:
            return {m.spec.trial_id: error}
    if not members:
        return {}
    ctx, start = members[0].ctx, time.perf_counter()
    fused = [
        FusedMember(
            m.nets,
            labeled_indices(m.state),
            generator(m.spec.seed, r, "order"),
            generator(m.spec.seed, r, "augment"),
        )
        for m in members
    ]
    outcomes = train_round_fused(fused, ctx.images, ctx.labels, ctx.spec.train, ctx.strategy.objective, ctx.normalize)
    share = (time.perf_counter() - start) / len(members)  # each member's share of the group's training time
    fits: dict[str, Fit | AlbenchError] = {}
    for m, f, outcome in zip(members, fused, outcomes, strict=True):
        if isinstance(outcome, AlbenchError):
            fits[m.spec.trial_id] = outcome
        else:
            fits[m.spec.trial_id] = assess_fit(m.ctx, m.nets, f.labeled, outcome.final_loss, share)
    return fits


def _finish_round(m: _Member, r: int, fit: Fit | AlbenchError | None, n_fused: int) -> RoundRecord:
    """The member's query and record for round r, after its fit (fused, its own, or its round-0 group's)."""
    if isinstance(fit, AlbenchError):
        raise fit
    if fit is None:  # round 0 from the member's round-0 group: this trial only queries
        assert m.round0 is not None
        load_weights(
            m.nets, m.round0.weights, f"the round-0 fit {m.round0.key}", "delete that round-0 fit to train it again"
        )
        return replace(query_round(m.ctx, m.nets, m.state, r, m.round0.fit), round0_group=m.round0.key)
    record = query_round(m.ctx, m.nets, m.state, r, fit)
    return replace(record, fused_with=n_fused) if n_fused > 1 else record
