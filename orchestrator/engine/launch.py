"""What a process needs to run one job, and nothing else: the typed launch description a backend hands to
`orchestrator.engine.execute`.

A job is the fit of a round-0 group, or a group of 1 to K trials that advance together (`orchestrator.plan.jobs`).
The description is built by the driver when the job is released (so a trial that waited on its round-0 fit
knows where the fit is), crosses the Ray boundary as JSON (`to_json`), and is read back typed and validated in
the worker (`from_json`): a worker never reads an untyped dict.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from experiments.specs import TrialSpec

JobKind = Literal["fit", "trials"]


class MemberLaunch(BaseModel):
    """One trial of a job, with where it resumes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: TrialSpec
    resume_from: str | None = None  # the checkpoint an earlier run left (a URI), or None: from its start
    legacy_id: str | None = None  # the id an older albench gave the trial, which its checkpoint still carries
    mlflow_run_id: str | None = None  # kept with its checkpoints
    round0_key: str
    round0_from: str | None = None  # its round-0 group's filed fit, where the trial starts at round 0

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id


class Launch(BaseModel):
    """One job: for a fit, `members` are the trials that wait on it (it trains the first one's round 0); for
    trials, the members advance round by round together (a lone trial is a group of one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    kind: JobKind
    members: tuple[MemberLaunch, ...]
    dataset_key: str
    bundle: dict[str, float]  # one scoring shard's resources (CPU, GPU share)
    scoring_shards: int = 1
    scoring_heap: str = "fast"
    score_batch_size: int | Literal["auto"]

    @property
    def round0_key(self) -> str:
        return self.members[0].round0_key

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Launch:
        return cls.model_validate_json(text)
