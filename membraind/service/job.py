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


class RequestEnvelope(StrictModel):
    """The fields a request has beside its job kind's: ``id`` and ``priority``."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=JOB_ID_PATTERN)
    priority: int | None = Field(None, ge=-100, le=100, description="higher runs first (default: by kind)")


class Job(RequestEnvelope):
    """A validated piece of work: what to do (``spec``), how urgent, and who asked.

    ``id`` may be chosen by the caller: submitting the same id twice yields one job.
    """

    spec: JobSpec
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
    envelope_fields = {name: data.pop(name) for name in RequestEnvelope.model_fields if name in data}
    envelope_fields = {name: value for name, value in envelope_fields.items() if value is not None}  # null: not given
    problems = []  # every one of them, so that a request is mended in one go
    try:
        envelope = RequestEnvelope.model_validate(envelope_fields)
    except ValidationError as exc:
        problems.append(describe_validation_error(exc))
    try:
        spec = parse_spec(data)
    except ValidationError as exc:
        problems.append(f"{describe_validation_error(exc)}{_allowed(data, exc)}")
    else:
        problems += [f"{field}: holds a NUL character (in a path) or an escaped lone surrogate such as \\ud800 (not a "
                     "character); neither can be a file name or be stored" for field in _unusable_text(spec.model_dump(), "")]  # fmt: skip
    if problems:
        raise RequestError(f"invalid request: {'; '.join(problems)}")
    return Job(**envelope.model_dump(), spec=spec, source=source, client=client)


def _unusable_text(value: object, where: str) -> list[str]:
    """The fields of a dumped spec holding a lone surrogate (JSON lets "\\ud800" through), or a path holding NUL."""
    if isinstance(value, dict):
        items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        if isinstance(value, Path) and "\0" in str(value):
            return [where]
        try:
            str(value).encode("utf-8") if isinstance(value, (str, Path)) else None
        except UnicodeEncodeError:
            return [where]
        return []
    return [found for key, item in items for found in _unusable_text(item, key)]


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
