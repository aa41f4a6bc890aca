"""The ledger of a results folder: RESULTS/trials/<trial_id>.json, one small JSON file per trial.

Each entry says where its trial stands (a `TrialStatus`), how many rounds it completed, where its latest
checkpoint is, which MLflow run is its own, and the spec it computes (so a later albench can carry it over).
Entries are replaced atomically. `orchestrator.store.bookkeeper` alone writes them; `albench status` reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

TRIALS_DIR = "trials"
ROUND0_DIR = "round0"  # RESULTS/round0/<round0_key>.json: where a round-0 group's one fit is stored


class TrialStatus(StrEnum):
    PENDING = "pending"  # planned, or interrupted: the next run resumes it from its checkpoint
    RUNNING = "running"
    DONE = "done"  # every round recorded; never run again
    FAILED = "failed"  # stopped on an error no retry can fix (its message is kept); the next run retries it


@dataclass
class TrialEntry:
    trial_id: str
    label: str  # dataset/regime/strategy/seedN
    experiment: str
    n_rounds: int
    status: TrialStatus = TrialStatus.PENDING
    rounds_done: int = 0
    checkpoint: str | None = None  # the latest checkpoint: relative to the results folder when inside it, else a URI
    mlflow_run_id: str | None = None
    error: str = ""
    nodes: list[str] = field(default_factory=list)  # the Ray nodes it ran on, in order
    spec_version: int = 0
    spec: str = ""  # the TrialSpec as JSON
    legacy_id: str | None = None  # the id albench <= 17506af gave it; its checkpoints may still carry that id
    mlflow_synced: str = ""  # what its MLflow run holds, as `Tracker.fingerprint` says it: "" where unknown

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialEntry:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "status": TrialStatus(known.get("status", TrialStatus.PENDING))})


def entry_path(results: Path, trial_id: str) -> Path:
    return Path(results) / TRIALS_DIR / f"{trial_id}.json"


def read_entry(results: Path, trial_id: str) -> TrialEntry | None:
    path = entry_path(results, trial_id)
    return TrialEntry.from_json(json.loads(path.read_text())) if path.exists() else None


def raw_entries(results: Path) -> list[dict[str, Any]]:
    """Every entry as stored, whichever albench wrote it."""
    folder = Path(results) / TRIALS_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def read_all(results: Path) -> list[TrialEntry]:
    return [TrialEntry.from_json(data) for data in raw_entries(results)]


def write_entry(results: Path, entry: TrialEntry) -> None:
    path = entry_path(results, entry.trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(entry), indent=1))
    os.replace(tmp, path)


def remove_entry(results: Path, trial_id: str) -> None:
    entry_path(results, trial_id).unlink(missing_ok=True)


def round0_entry_path(results: Path, key: str) -> Path:
    return Path(results) / ROUND0_DIR / f"{key}.json"


def read_round0_entry(results: Path, key: str) -> dict[str, Any] | None:
    """{'round0_key', 'checkpoint' (as a trial entry stores it), 'trials' (the ids that share it)}, or None."""
    path = round0_entry_path(results, key)
    return json.loads(path.read_text()) if path.exists() else None


def write_round0_entry(results: Path, entry: dict[str, Any]) -> None:
    path = round0_entry_path(results, entry["round0_key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, path)
