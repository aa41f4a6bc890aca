"""The driver's record of every trial of a results folder: RESULTS/trials/<trial_id>.json.

One small JSON file per trial, replaced atomically, says where the trial stands (pending, running, done,
failed with its error), how many rounds it completed, where its latest checkpoint is and which MLflow run
is its own. The driver alone writes it; `albench status` reads it; a rerun resumes from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

TRIALS_DIR = "trials"


@dataclass
class TrialEntry:
    trial_id: str
    label: str  # dataset/regime/strategy/seedN
    experiment: str
    n_rounds: int
    status: str = "pending"  # pending | running | done | failed
    rounds_done: int = 0
    checkpoint: str | None = None  # URI of the latest checkpoint directory
    mlflow_run_id: str | None = None
    error: str = ""
    nodes: list[str] = field(default_factory=list)  # the Ray nodes it ran on, in order


def entry_path(results: Path, trial_id: str) -> Path:
    return Path(results) / TRIALS_DIR / f"{trial_id}.json"


def read_entry(results: Path, trial_id: str) -> TrialEntry | None:
    path = entry_path(results, trial_id)
    return TrialEntry(**json.loads(path.read_text())) if path.exists() else None


def write_entry(results: Path, entry: TrialEntry) -> None:
    path = entry_path(results, entry.trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(entry), indent=1))
    os.replace(tmp, path)


def read_all(results: Path) -> list[TrialEntry]:
    folder = Path(results) / TRIALS_DIR
    return [TrialEntry(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
