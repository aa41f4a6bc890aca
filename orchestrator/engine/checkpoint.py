"""Trial checkpoints: a directory with `state.pt` (weights, labeling history) and `records.json` (every round);
and round-0 fits (`orchestrator.engine.round0`): a directory with `state.pt` (weights) and `fit.json` (the
fit's numbers).

The records are kept apart from the weights so the driver can project them into the result sinks without
loading the model. Writes are atomic; loads are weights-only (no code runs) and fail with a message that
says what to delete. A checkpoint is addressed by a URI that pyarrow understands (a local path, s3://...),
so the driver and the workers of a cluster can read the same one from shared storage.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pyarrow.fs as pafs
import torch

from experiments.errors import CheckpointError
from experiments.records import RoundRecord
from models.networks import BACKBONE, Weights
from orchestrator.engine.records import Fit, Round0Fit, TrialState
from strategies.loss_prediction import MODULE

FORMAT_VERSION = 2  # 1: albench <= 17506af, with the loss-prediction module in a slot of its own
STATE_FILE, RECORDS_FILE, FIT_FILE = "state.pt", "records.json", "fit.json"


def weights_of_format_1(payload: dict) -> Weights:
    """Format 1 (albench <= 17506af) kept the loss-prediction module in a slot of its own: it is that strategy
    family's network now."""
    weights: Weights = {BACKBONE: payload["backbone"]}
    if payload.get("loss_module") is not None:
        weights[MODULE] = payload["loss_module"]
    return weights


def write_checkpoint_dir(state: TrialState, directory: str | os.PathLike) -> None:
    """Writes the two files of a checkpoint into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "trial_id": state.trial_id,
        "labeled_round": state.labeled_round,
        "weights": state.weights,
    }
    torch.save(payload, directory / STATE_FILE)
    records = {"trial_id": state.trial_id, "records": [r.to_dict() for r in state.records], "extra": state.extra}
    (directory / RECORDS_FILE).write_text(json.dumps(records))


def save_checkpoint(state: TrialState, directory: str | os.PathLike) -> None:
    """write_checkpoint_dir into a sibling temporary folder, then rename: a crash leaves no half checkpoint."""
    _save_atomically(lambda tmp: write_checkpoint_dir(state, tmp), Path(directory))


def _save_atomically(write: Callable[[Path], None], directory: Path) -> None:
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def write_fit_dir(fit: Round0Fit, directory: str | os.PathLike) -> None:
    """Writes a round-0 fit into `directory` (created if needed): weights apart from the numbers, as for trials."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT_VERSION, "round0_key": fit.key, "weights": fit.weights}, directory / STATE_FILE)
    numbers = {"round0_key": fit.key, "device": fit.device, "fit": asdict(fit.fit)}
    (directory / FIT_FILE).write_text(json.dumps(numbers))


def save_fit(fit: Round0Fit, directory: str | os.PathLike) -> None:
    """write_fit_dir, atomically (a crash leaves no half fit)."""
    _save_atomically(lambda tmp: write_fit_dir(fit, tmp), Path(directory))


def load_fit(uri: str, key: str) -> Round0Fit:
    """The round-0 fit stored at `uri`, which must be the fit of round-0 group `key`."""
    try:
        numbers = json.loads(_read(uri, FIT_FILE))
        fit = Fit(**{**numbers["fit"], "per_class_accuracy": tuple(numbers["fit"]["per_class_accuracy"])})
        payload = torch.load(io.BytesIO(_read(uri, STATE_FILE)), map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT_VERSION}")
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"the round-0 fit {uri} is corrupt or unreadable ({type(error).__name__}: {first_line}); delete that "
            "folder to train the group's round 0 again"
        ) from error
    if numbers["round0_key"] != key or payload["round0_key"] != key:
        raise CheckpointError(f"the round-0 fit {uri} belongs to group {numbers['round0_key']}, not {key}; remove it")
    return Round0Fit(key, payload["weights"], fit, numbers.get("device", ""))


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)


def checkpoint_exists(uri: str) -> bool:
    """Whether a checkpoint directory is there at all (a deleted one restarts its trial; a broken one is an error)."""
    filesystem, path = _open(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def remove_checkpoint(uri: str) -> bool:
    """Deletes a checkpoint folder (local or on shared storage); False where it could not be removed."""
    filesystem, path = _open(uri)
    try:
        filesystem.delete_dir(path)
    except (OSError, FileNotFoundError):
        return False
    return True


def _read(uri: str, name: str) -> bytes:
    filesystem, path = _open(uri)
    with filesystem.open_input_stream(f"{path.rstrip('/')}/{name}") as stream:
        return stream.read()


def _corrupt(uri: str, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {uri} is corrupt or unreadable ({type(error).__name__}: {error}); delete that folder to rerun "
        "the trial from its first round (the rounds already in the results stay until they are rewritten)"
    )


def _check_owner(uri: str, found: str, trial_id: str, legacy_id: str | None) -> None:
    if found not in (trial_id, legacy_id):
        raise CheckpointError(f"checkpoint {uri} belongs to trial {found}, not {trial_id}; remove it")


def read_records(uri: str, trial_id: str, legacy_id: str | None = None) -> tuple[list[RoundRecord], dict[str, str]]:
    """The records and extras of a checkpoint, without its weights (what the result sinks need).

    `legacy_id`: the id an older albench gave the same trial, which its checkpoints still carry."""
    try:
        data = json.loads(_read(uri, RECORDS_FILE))
        records = [RoundRecord.from_dict(r) for r in data["records"]]
    except Exception as error:
        raise _corrupt(uri, error) from error
    _check_owner(uri, data["trial_id"], trial_id, legacy_id)
    return records, dict(data.get("extra", {}))


def load_checkpoint(uri: str, trial_id: str, legacy_id: str | None = None) -> TrialState:
    """The full TrialState of a checkpoint directory, under `trial_id` (also when written under `legacy_id`)."""
    records, extra = read_records(uri, trial_id, legacy_id)
    try:
        payload = torch.load(io.BytesIO(_read(uri, STATE_FILE)), map_location="cpu", weights_only=True)
        if payload.get("format") == 1:
            payload = {**payload, "format": FORMAT_VERSION, "weights": weights_of_format_1(payload)}
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT_VERSION}")
        found, labeled_round, weights = payload["trial_id"], payload["labeled_round"], payload["weights"]
    except Exception as error:
        raise _corrupt(uri, error) from error
    _check_owner(uri, found, trial_id, legacy_id)
    return TrialState(trial_id, labeled_round, weights, records, extra)
