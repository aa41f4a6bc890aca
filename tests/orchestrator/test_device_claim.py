"""A packed trial's device claim on the CPU: torch's memory-fraction call replaced by a stand-in that checks its
device argument as torch's CUDA build does. torch 2.11 on an H200 refused the device 'cuda' (no index) and failed
every trial with `resources.gpus_per_trial < 1`; nothing else on a CPU reaches that call."""

from __future__ import annotations

import pytest
import ray
import torch
from torch.cuda._utils import _get_device_index

from orchestrator.engine.gpu import limit_memory
from orchestrator.run.ray_cluster import claim_device


@pytest.fixture
def memory_fraction_calls(monkeypatch) -> list[tuple[float, int]]:
    """torch.cuda.set_per_process_memory_fraction as the CUDA build checks its device: an index is required."""
    calls: list[tuple[float, int]] = []

    def set_per_process_memory_fraction(fraction: float, device=None) -> None:
        calls.append((fraction, _get_device_index(device)))  # raises for torch.device('cuda'), as torch 2.11 does

    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_per_process_memory_fraction)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return calls


def test_the_stand_in_refuses_a_cuda_device_without_an_index_as_torch_does(memory_fraction_calls):
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_per_process_memory_fraction(0.5, torch.device("cuda"))


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_limit_memory_names_the_device_by_index(memory_fraction_calls, device):
    limit_memory(0.25, device)
    assert memory_fraction_calls == [(0.25, 0)]


def test_a_whole_gpu_or_a_cpu_gets_no_cap(memory_fraction_calls):
    limit_memory(1.0, "cuda")
    limit_memory(0.5, "cpu")
    assert memory_fraction_calls == []


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_a_packed_trial_claims_its_gpu_by_index_and_caps_its_share(memory_fraction_calls, monkeypatch, share):
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])  # Ray gave the worker GPU 3: CUDA_VISIBLE_DEVICES=3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = claim_device({"CPU": 1, "GPU": share})
    assert torch.device(device) == torch.device("cuda", 0)  # the first (only) visible GPU
    assert memory_fraction_calls == [(share, 0)]
