"""Whether the cluster can ever hold one trial, read once its nodes have reported.

A trial asks Ray for a placement group: one bundle per scoring shard, each `cpus_per_trial` CPUs and, where the
cluster has GPUs, `gpus_per_trial` of a GPU. A group larger than the cluster waits forever without a word from
Tune but a generic warning, so the driver checks it before any trial starts:
- on a local instance or any cluster that cannot grow, a trial that can never fit is refused, naming the numbers
  and the settings that fix it;
- on a cluster joined by `--address`, which may autoscale, the same numbers are a warning, repeated in the
  progress line while nothing can start.

Right after `ray.init` the cluster's resource view can still be empty (the node has not reported yet), so the
view is read only once it shows CPUs, within a bounded wait that names what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from experiments.errors import ConfigError
from orchestrator.plan.grid import ResourcesSpec

Resources = Mapping[str, float]
REPORT_WAIT_S = 60.0  # a local node reports within a second; a remote head under load can take tens of seconds


def reported_resources(
    read: Callable[[], Resources], timeout_s: float | None = None, poll_s: float = 0.1
) -> dict[str, float]:
    """The cluster's total resources once its nodes have reported some CPUs; a clear error after `timeout_s`."""
    timeout_s = REPORT_WAIT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        resources = dict(read())
        if resources.get("CPU", 0) > 0:
            return resources
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"the Ray cluster reported no CPUs within {timeout_s:g} s of joining it (its resources: {resources}): "
                "no node has registered. Check the cluster with `ray status`, or run again"
            )
        time.sleep(poll_s)


def trial_bundle(resources: ResourcesSpec, cluster: Resources, report: Callable[[str], None]) -> dict[str, float]:
    """One shard's bundle: a GPU share where the cluster has GPUs (as the grid asks), else CPUs only, said once."""
    bundle = {"CPU": resources.cpus_per_trial}
    if resources.gpus_per_trial > 0 and cluster.get("GPU", 0) > 0:
        bundle["GPU"] = resources.gpus_per_trial
    elif resources.gpus_per_trial > 0:
        report(
            f"the grid asks {resources.gpus_per_trial:g} GPU per trial; the cluster has no GPU: trials run on CPUs "
            "(set resources.gpus_per_trial: 0 to say so in the grid)"
        )
    return bundle


def shortfall(bundle: Mapping[str, float], shards: int, cluster: Resources, where: str = "the cluster") -> str | None:
    """What one trial's placement group needs beyond `cluster`, in words; None when it fits."""
    for resource, unit, setting in (("CPU", "CPUs", "cpus_per_trial"), ("GPU", "GPUs", "gpus_per_trial")):
        per_shard = bundle.get(resource, 0)
        needed, has = per_shard * shards, cluster.get(resource, 0)
        if needed > has:
            parts = f"scoring_shards {shards} × {setting} {per_shard:g}" if shards > 1 else f"{setting} {per_shard:g}"
            fix = f"lower scoring_shards or {setting}" if shards > 1 else f"lower {setting}"
            return f"a trial needs {needed:g} {unit} ({parts}); {where} has {has:g}: {fix}"
    return None


def check_placement(
    bundle: Mapping[str, float],
    shards: int,
    cluster: Resources,
    can_grow: bool,
    report: Callable[[str], None],
) -> str | None:
    """Refuses a trial that a fixed cluster can never hold; on one that may grow, warns and returns the reason."""
    where = "the cluster" if can_grow else "this machine"
    reason = shortfall(bundle, shards, cluster, where)
    if reason is None:
        return None
    if not can_grow:
        raise ConfigError(reason)
    report(f"warning: {reason}. No trial can start until the cluster grows (an autoscaler may add nodes)")
    return reason
