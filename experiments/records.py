"""What one round of a trial produces: the record that becomes its Parquet row and MLflow point."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TIMING_FIELDS = ("train_seconds", "eval_seconds", "query_seconds")
PROVENANCE_FIELDS = ("git_sha", "device", "round0_group", "fused_with", "mps")
GPU_FIELDS = ("gpu_peak_allocated_mib", "gpu_peak_reserved_mib", "gpu_utilization")  # measured, like timings


@dataclass(frozen=True)
class RoundRecord:
    """One round: every field but the timings and the provenance is a pure function of (spec, seed) on a device."""

    round: int
    n_labeled: int  # labeled images the model of this round was trained on
    test_accuracy: float  # fraction in [0, 1]
    per_class_accuracy: tuple[float, ...]
    train_loss: float  # mean training loss of the round's last epoch
    selected: tuple[int, ...]  # pool indices labeled at the end of this round (empty in the last round)
    train_seconds: float
    eval_seconds: float
    query_seconds: float
    git_sha: str = ""  # the albench that computed the round ('' in checkpoints of albench <= 17506af)
    device: str = ""  # where: 'NVIDIA H100 80GB HBM3' or 'cpu: <model> x<threads>'
    # accuracy on the labeled set after the round's training (eval mode, test-time views): how close to
    # convergence the model was; None in rounds computed before albench recorded it
    train_accuracy: float | None = None
    # what the round used of the trial's own GPU (None on a CPU; utilisation None without NVML)
    gpu_peak_allocated_mib: float | None = None
    gpu_peak_reserved_mib: float | None = None
    gpu_utilization: float | None = None  # mean % over the round
    # round 0 only: the key of the round-0 group whose one fit this trial started from (orchestrator/engine/round0.py);
    # None where the trial trained its round 0 itself (albench before round-0 groups)
    round0_group: str | None = None
    # how many trials' fits this round's fit was fused with, itself included (orchestrator/engine/group.py); None: alone
    fused_with: int | None = None
    # whether NVIDIA MPS served the trial's GPU (orchestrator/engine/gpu.py `mps_active`); None on a CPU
    mps: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(
            **{
                **data,
                "per_class_accuracy": tuple(data["per_class_accuracy"]),
                "selected": tuple(data["selected"]),
            }
        )

    def deterministic(self) -> dict[str, Any]:
        """The fields a rerun of the same spec reproduces exactly (on CPU): no timings, provenance or GPU use."""
        measured = TIMING_FIELDS + PROVENANCE_FIELDS + GPU_FIELDS
        return {k: v for k, v in self.to_dict().items() if k not in measured}
