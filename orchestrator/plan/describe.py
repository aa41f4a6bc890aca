"""The plan in words (`albench plan`): per strategy, trials, rounds, images trained and images scored; the
round-0 fits and fused groups the plan's jobs hold; with a measured training throughput, hours.

Counts come from the specs alone (no data is read), so `albench plan` works on a laptop for a cluster grid.
"""

from __future__ import annotations

from pathlib import Path

from experiments.specs import TrialSpec
from orchestrator.engine.group import fusable
from orchestrator.plan.cost import StrategyCost, grid_cost
from orchestrator.plan.grid import Grid
from orchestrator.plan.jobs import Plan, build_plan
from orchestrator.store.bookkeeper import Planned
from orchestrator.store.ledger import TrialEntry, TrialStatus, read_all

SHOWN_GROUPS = 20


def fresh_plan(grid: Grid) -> Plan:
    """The plan of the grid before anything ran: every trial from round 1, no round-0 fit filed."""
    planned = [
        Planned(spec, TrialEntry(spec.trial_id, spec.label, spec.experiment, len(spec.regime.labeled_counts)))
        for spec in grid.trials()
    ]
    return build_plan(planned, grid, filed=lambda key: False)


def round0_saving(plan: Plan) -> int:
    """Training image-passes the plan's round-0 fits save: each trains once for all the trials waiting on it."""
    return sum((len(job.members) - 1) * int(job.work) for job in plan.fits)


def fused_lines(plan: Plan, fuse: int) -> list[str]:
    """The fused groups of the plan's jobs, each with its members, in the plan's order."""
    groups = [job for job in plan.trials if len(job.members) > 1]
    if fuse == 1:
        return []
    lines = [
        f"fused (resources.fuse: {fuse}): {len(groups)} groups for {sum(len(j.members) for j in plan.trials)} "
        "trials, each group trains as one (before a run, its complete trials drop out of their groups)"
    ]
    alone = sum(1 for job in plan.trials for m in job.members if not fusable(m.spec))
    if alone:
        lines.append(f"  {alone} trials on a plugin's backbone, data or training code train alone, never fused")
    for i, job in enumerate(groups[:SHOWN_GROUPS], 1):
        lines.append(f"  group {i}: {' + '.join(m.spec.label for m in job.members)}")
    if len(groups) > SHOWN_GROUPS:
        lines.append(f"  ... and {len(groups) - SHOWN_GROUPS} more groups")
    return lines


def format_cost(grid: Grid, train_images_per_second: float | None = None, plan: Plan | None = None) -> str:
    """The plan's table: per strategy as if its trials ran alone; the total trains each round-0 group once."""
    plan = plan or fresh_plan(grid)
    rows = grid_cost(grid)
    saved = round0_saving(plan)
    alone = sum(r.train_images for r in rows)
    total = StrategyCost(
        "total",
        sum(r.trials for r in rows),
        sum(r.rounds for r in rows),
        alone - saved,
        sum(r.scored_images for r in rows),
    )
    lines = [f"grid '{grid.name}': {total.trials} trials, {total.rounds} rounds"]
    width = max(18, *(len(r.strategy) + 2 for r in rows))
    header = f"{'strategy':<{width}}{'trials':>8}{'rounds':>8}{'train images':>16}{'scored images':>16}"
    if train_images_per_second:
        header += f"{'train hours':>13}"
    lines.append(header)
    for r in [*rows, total]:
        line = f"{r.strategy:<{width}}{r.trials:>8,}{r.rounds:>8,}{r.train_images:>16,}{r.scored_images:>16,}"
        if train_images_per_second:
            line += f"{r.train_images / train_images_per_second / 3600:>13,.1f}"
        lines.append(line)
    lines.append(
        f"round 0 is trained once per group ({len(plan.fits)} groups for {total.trials} trials): the total trains "
        f"{saved:,} image-passes fewer than the strategies' rows add up to ({saved / max(alone, 1):.1%})"
    )
    lines.append(
        f"jobs: {len(plan.fits)} round-0 fits and {len(plan.trials)} trial jobs, longest first; each trial job "
        "starts as soon as the fits it waits on are filed"
    )
    lines += fused_lines(plan, grid.resources.fuse)
    if not any(t.regime.subset for t in grid.trials()):
        lines.append("(a regime without subset scores the whole unlabeled pool: not counted above)")
    lines += plugin_lines(grid.trials())
    return "\n".join(lines)


def plugin_lines(trials: list[TrialSpec]) -> list[str]:
    """The plugins the grid's trials use, each with its package, version and trial count."""
    used: dict[tuple[str, str, str], int] = {}
    for spec in trials:
        for kind, provenance in spec.plugins.items():
            name = {"strategy": spec.strategy.name, "model": spec.model, "dataset": spec.dataset.name}[kind]
            used[(kind, name, provenance)] = used.get((kind, name, provenance), 0) + 1
    if not used:
        return []
    return ["plugins (their package and version enter each trial's id):"] + [
        f"  {kind} {name}: {provenance} ({n} trials)" for (kind, name, provenance), n in sorted(used.items())
    ]


def results_lines(trials: list[TrialSpec], results: Path) -> list[str]:
    """What a results folder already holds of the grid, and which trials are new because a plugin's version
    changed (the results of the other version stay in the folder under their own ids; none is reused)."""
    entries = read_all(results)
    by_id = {e.trial_id: e for e in entries}
    done = sum(1 for t in trials if t.trial_id in by_id and by_id[t.trial_id].status == TrialStatus.DONE)
    started = sum(1 for t in trials if t.trial_id in by_id and by_id[t.trial_id].rounds_done > 0) - done
    lines = [
        f"results {results}: {done} of {len(trials)} trials complete, {started} part-done, "
        f"{len(trials) - done - started} not started"
    ]
    others: dict[tuple[str, str], list[TrialSpec]] = {}  # (experiment, label) -> the folder's specs of that label
    for e in entries:
        if e.spec:
            others.setdefault((e.experiment, e.label), []).append(TrialSpec.model_validate_json(e.spec))
    changed: dict[str, list[str]] = {}  # what changed -> the new trials it makes
    for spec in trials:
        if spec.trial_id in by_id:
            continue
        for old in others.get((spec.experiment, spec.label), []):
            kinds = sorted(set(old.plugins) | set(spec.plugins))
            change = [
                f"{kind} {old.plugins.get(kind, 'albench')} -> {spec.plugins.get(kind, 'albench')}"
                for kind in kinds
                if old.plugins.get(kind) != spec.plugins.get(kind)
            ]
            if change:
                changed.setdefault("; ".join(change), []).append(f"{spec.label} (trial {spec.trial_id})")
                break
    for change, labels in sorted(changed.items()):
        lines.append(
            f"new plugin version ({change}): {len(labels)} new trials; the folder keeps the earlier version's "
            "trials and rows under their own ids, none is reused:"
        )
        lines += [f"  {label}" for label in labels[:SHOWN_GROUPS]]
        if len(labels) > SHOWN_GROUPS:
            lines.append(f"  ... and {len(labels) - SHOWN_GROUPS} more")
    return lines
