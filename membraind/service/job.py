"""The job envelope every way in produces, the journal's record of it, and the one way a
request (a request file's fields, a ZeroMQ submission) becomes a job."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from membraind_client.messages import FINAL_STATES, JOB_ID_PATTERN, JobInfo, JobState
from pydantic import Field, ValidationError, model_validator

from membraind.errors import MembraindError, describe_validation_error
from membraind.jobs.specs import SPEC_TYPES, JobSpec, parse_spec
from membraind.service.priority import default_priority
from membraind.strict import StrictModel

__all__ = ["Job", "JobRecord", "JobState", "FINAL_STATES", "RequestError", "job_from_request"]


class Job(StrictModel):
    """A validated piece of work: what to do (``spec``), how urgent, and who asked.

    ``id`` may be chosen by the caller: submitting the same id twice yields one job.
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=JOB_ID_PATTERN)
    spec: JobSpec
    priority: int | None = Field(None, ge=-100, le=100, description="higher runs first (default: by kind)")
    source: str = Field("api", description="how it came in: request-file, scope, vast, zmq, cli")
    client: str | None = Field(None, description="who sent it: a request file, a CurveZMQ key")
    parent: str | None = Field(None, description="the job this one is a part of (set by the scheduler)")

    @model_validator(mode="after")
    def _priority(self) -> "Job":
        if self.priority is None:
            self.priority = default_priority(self.spec)
        return self


class JobRecord(JobInfo):
    """A job as the journal knows it (what status, list, the request folder and the ZeroMQ API report)."""

    def job(self) -> Job:
        """The job this record holds."""
        return Job(id=self.id, spec=parse_spec(self.spec), priority=self.priority, source=self.source, client=self.client,
                   parent=self.parent)  # fmt: skip


class RequestError(MembraindError):
    """A request (file or submission) that cannot become a job (the message says why)."""


def job_from_request(data: dict[str, Any], *, source: str, client: str | None = None) -> Job:
    """The job a request describes: ``kind`` and its fields, plus optional ``id`` and ``priority``.

    Raises :class:`RequestError` naming the field at fault and what is allowed.
    """
    data = dict(data)
    job_id, priority = data.pop("id", None), data.pop("priority", None)
    try:
        spec = parse_spec(data)
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc)}{_allowed(data, exc)}") from None
    field = _unusable_text(spec.model_dump(), "")
    if field is not None:
        raise RequestError(f"invalid request: {field}: holds a NUL character (in a path) or an escaped lone surrogate "
                           "such as \\ud800 (not a character); neither can be a file name or be stored")  # fmt: skip
    try:
        return Job(
            **({"id": job_id} if job_id is not None else {}), spec=spec, priority=priority, source=source, client=client,
        )  # fmt: skip
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc)}") from None


def _unusable_text(value: object, where: str) -> str | None:
    """The field of a dumped spec holding a lone surrogate (JSON lets "\\ud800" through), or a path holding NUL."""
    if isinstance(value, dict):
        items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        if isinstance(value, Path) and "\0" in str(value):
            return where
        try:
            str(value).encode("utf-8") if isinstance(value, (str, Path)) else None
        except UnicodeEncodeError:
            return where
        return None
    for key, item in items:
        found = _unusable_text(item, key)
        if found is not None:
            return found
    return None


def _allowed(data: dict, exc: ValidationError) -> str:
    """For unknown fields or kinds: what is allowed instead."""
    types = {spec.model_fields["kind"].default: spec for spec in SPEC_TYPES}
    kind = data.get("kind")
    spec_type = types.get(kind) if isinstance(kind, str) else None
    if spec_type is None:
        return f" (kind must be one of: {', '.join(types)})"
    if any(e["type"] == "extra_forbidden" and len(e["loc"]) == 2 for e in exc.errors()):  # (kind, field): top level
        return f" (fields of a {data['kind']} request: {', '.join(f for f in spec_type.model_fields)}, plus id and priority)"
    return ""
