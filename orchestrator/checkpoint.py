"""Saving and loading a TrialState: atomic writes, safe loads, and clear errors for corrupt or foreign files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from experiments.errors import CheckpointError
from orchestrator.records import RoundRecord, TrialState

FORMAT_VERSION = 1


def save_state(state: TrialState, path: str | os.PathLike) -> None:
    """Writes to a temporary file beside `path`, then renames: a crash leaves the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "trial_id": state.trial_id,
        "labeled_round": state.labeled_round,
        "backbone": state.backbone,
        "loss_module": state.loss_module,
        "records": [r.to_dict() for r in state.records],
        "extra": dict(state.extra),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike, trial_id: str) -> TrialState:
    """Reads a checkpoint written by save_state for trial `trial_id` (weights-only unpickling: no code runs)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT_VERSION}")
        state = TrialState(
            trial_id=payload["trial_id"],
            labeled_round=payload["labeled_round"],
            backbone=payload["backbone"],
            loss_module=payload["loss_module"],
            records=[RoundRecord.from_dict(r) for r in payload["records"]],
            extra=dict(payload["extra"]),
        )
    except Exception as error:  # any unreadable content is the same user-facing problem
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error}); delete it to rerun "
            "that trial from its first round (its finished rounds in the results stay as they are)"
        ) from error
    if state.trial_id != trial_id:
        raise CheckpointError(f"checkpoint {path} belongs to trial {state.trial_id}, not {trial_id}; remove or move it")
    return state
