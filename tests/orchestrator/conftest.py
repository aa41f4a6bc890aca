"""Ray fixtures, named for what they start: one local Ray head per test session, nodes added per test."""

from __future__ import annotations

import os

import pytest

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}  # a lost node is seen in ~2 s


@pytest.fixture(scope="session")
def ray_head_without_cpus():
    """A real local Ray cluster whose head runs no trials: each test adds the worker nodes it needs."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEALTH_CHECKS})
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    os.environ.pop("RAY_ADDRESS", None)  # subprocesses (the CLI tests) start their own Ray instance
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _nodes(cluster, *specs):
    nodes = [cluster.add_node(**spec) for spec in specs]
    cluster.wait_for_nodes()
    return nodes


def _remove(cluster, nodes):
    for node in nodes:
        if node in cluster.worker_nodes:
            cluster.remove_node(node)


@pytest.fixture
def node_with_2_cpus(ray_head_without_cpus):
    nodes = _nodes(ray_head_without_cpus, {"num_cpus": 2})
    yield nodes[0]
    _remove(ray_head_without_cpus, nodes)


@pytest.fixture
def node_with_4_cpus_4_fake_gpus(ray_head_without_cpus):
    nodes = _nodes(ray_head_without_cpus, {"num_cpus": 4, "num_gpus": 4})
    yield nodes[0]
    _remove(ray_head_without_cpus, nodes)


@pytest.fixture
def node_with_8_cpus_2_fake_gpus(ray_head_without_cpus, monkeypatch):
    """Its processes inherit CUDA_VISIBLE_DEVICES=0,1, as on a real two-GPU machine."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    nodes = _nodes(ray_head_without_cpus, {"num_cpus": 8, "num_gpus": 2})
    yield nodes[0]
    _remove(ray_head_without_cpus, nodes)


@pytest.fixture
def two_nodes_with_2_cpus_each(ray_head_without_cpus):
    nodes = _nodes(ray_head_without_cpus, {"num_cpus": 2}, {"num_cpus": 2})
    yield nodes
    _remove(ray_head_without_cpus, nodes)
