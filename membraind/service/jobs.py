"""The job envelope every way in produces, and the journal's record of it."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from membraind.jobs.execute import JobResult
from membraind.jobs.specs import JobSpec, default_priority

__all__ = ["Job", "JobRecord", "JobState", "FINAL_STATES", "parse_spec"]

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES = ("done", "failed", "cancelled")
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"

_SPEC = TypeAdapter(JobSpec)


def parse_spec(data: dict | str) -> object:
    """A job spec from a dict or JSON text (raises pydantic's ValidationError)."""
    return _SPEC.validate_json(data) if isinstance(data, str) else _SPEC.validate_python(data)


class Job(BaseModel):
    """A validated piece of work: what to do (``spec``), how urgent, and who asked.

    ``id`` may be chosen by the caller: submitting the same id twice yields one job.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=JOB_ID_PATTERN)
    spec: JobSpec
    priority: int | None = Field(None, ge=-100, le=100, description="higher runs first (default: by kind)")
    source: str = Field("api", description="how it came in: request-file, scope, vast, zmq, cli")
    client: str | None = Field(None, description="who sent it: a request file, a CurveZMQ key")

    @model_validator(mode="after")
    def _priority(self) -> "Job":
        if self.priority is None:
            self.priority = default_priority(self.spec)
        return self


class JobRecord(BaseModel):
    """A job as the journal knows it (what status, list and the request folder report)."""

    id: str
    kind: str
    spec: dict
    priority: int
    source: str
    client: str | None
    state: JobState
    progress: float
    message: str
    result: JobResult | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created: float
    started: float | None
    finished: float | None
    updated: float

    def job(self) -> Job:
        """The job this record holds."""
        return Job(id=self.id, spec=parse_spec(self.spec), priority=self.priority, source=self.source, client=self.client)

    @property
    def final(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self.state in FINAL_STATES
