"""A grid's work as a typed plan of jobs, built once from the grid and its caught-up ledger, and read by
`albench plan`, the cost lines and both backends.

A job is either
- the fit of a round-0 group (`orchestrator.engine.round0`): round 0 trained once for every trial that computes
  the same round-0 model, or
- a group of 1 to K trials that advance round by round together (`resources.fuse`; a lone trial is a group of
  one), which waits on the fits of its members that start at round 0 and whose fits are not filed yet.

Jobs come longest first, each after the fits it waits on: a fit's priority is its own work plus its longest
dependant's, so the fits that unblock the most work run first, and the run ends on short jobs, not on one long
one alone. The backends release a job as soon as the fits it waits on are filed (no barrier between fits and
trials).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from experiments.specs import TrialSpec
from orchestrator.engine.group import fused_groups
from orchestrator.engine.inputs import dataset_key
from orchestrator.engine.round0 import round0_key
from orchestrator.plan.cost import trial_work
from orchestrator.plan.grid import Grid
from orchestrator.store.bookkeeper import Planned


@dataclass(frozen=True)
class Job:
    """One unit a backend runs in one process: a round-0 fit, or trials that advance together."""

    id: str  # 'fit-<round-0 key>', a lone trial's id, or 'fused-<12 hex digits of its members' ids>'
    kind: Literal["fit", "trials"]
    members: tuple[Planned, ...]  # a fit's: the trials waiting on it (it trains the first one's round 0)
    waits_on: tuple[str, ...]  # the ids of the fit jobs it waits on
    shards: int  # bundles of the grid's per-trial resources it asks for (a fit: 1; trials: scoring_shards)
    work: float  # expected compute in training image-passes (`orchestrator.plan.cost.trial_work`)
    priority: float  # the order of release: a fit's own work plus its longest dependant's

    @property
    def round0_key(self) -> str | None:
        return self.id.removeprefix("fit-") if self.kind == "fit" else None

    @property
    def label(self) -> str:
        first = self.members[0].spec.label
        if self.kind == "fit":
            return f"round 0 of group {self.round0_key} ({len(self.members)} trials)"
        return first if len(self.members) == 1 else f"{first} + {len(self.members) - 1} fused"

    def resume_points(self) -> dict[str, int]:
        """Each member's trial id -> the round it goes on from."""
        return {m.spec.trial_id: m.entry.rounds_done for m in self.members}


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]  # in release order
    complete: tuple[Planned, ...]  # trials with nothing left to run

    @property
    def fits(self) -> list[Job]:
        return [j for j in self.jobs if j.kind == "fit"]

    @property
    def trials(self) -> list[Job]:
        return [j for j in self.jobs if j.kind == "trials"]

    def pending(self) -> list[Planned]:
        return [m for j in self.trials for m in j.members]


def fused_id(trial_ids: list[str]) -> str:
    """A fused group's job id: 'fused-' and 12 hex digits of its members' ids (stable across runs)."""
    return "fused-" + hashlib.sha256(",".join(trial_ids).encode()).hexdigest()[:12]


def build_plan(
    planned: list[Planned],
    grid: Grid,
    filed: Callable[[str], bool],
    pool_sizes: Mapping[str, int] | None = None,
) -> Plan:
    """The jobs that finish `planned`'s unfinished trials. `filed(key)`: round-0 group `key`'s fit is stored;
    `pool_sizes`: each dataset's train pool (by `dataset_key`), which counts a whole-pool query's work."""
    pool_sizes = pool_sizes or {}
    pending = [p for p in planned if not p.complete]
    keys = {p.spec.trial_id: round0_key(p.spec) for p in pending}
    waiting: dict[str, list[Planned]] = {}  # round-0 key -> the members that start from its unfiled fit
    for p in pending:
        if p.entry.rounds_done == 0 and not filed(keys[p.spec.trial_id]):
            waiting.setdefault(keys[p.spec.trial_id], []).append(p)
    by_id = {p.spec.trial_id: p for p in pending}
    from_fits = {p.spec.trial_id for members in waiting.values() for p in members}
    trial_jobs = []
    for specs in fused_groups([p.spec for p in pending], grid.resources.fuse):
        members = tuple(by_id[s.trial_id] for s in specs)
        ids = [s.trial_id for s in specs]
        fits = tuple(dict.fromkeys(f"fit-{keys[i]}" for i in ids if i in from_fits))
        work = sum(_work(m, pool_sizes) for m in members)
        job_id = ids[0] if len(ids) == 1 else fused_id(ids)
        trial_jobs.append(Job(job_id, "trials", members, fits, grid.resources.scoring_shards, work, work))
    fit_jobs = []
    for key, members in waiting.items():
        first = members[0].spec
        work = float(first.train.epochs * first.regime.initial)
        longest = max(j.work for j in trial_jobs if f"fit-{key}" in j.waits_on)
        fit_jobs.append(Job(f"fit-{key}", "fit", tuple(members), (), 1, work, work + longest))
    jobs = sorted([*fit_jobs, *trial_jobs], key=lambda j: j.priority, reverse=True)
    return Plan(tuple(jobs), tuple(p for p in planned if p.complete))


def _work(item: Planned, pool_sizes: Mapping[str, int]) -> float:
    spec: TrialSpec = item.spec
    return trial_work(spec, item.entry.rounds_done, pool_sizes.get(dataset_key(spec)))
