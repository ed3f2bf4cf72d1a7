"""The ZeroMQ API's requests, answered: bytes in, one reply out, no sockets here.

Every request gets a reply: malformed, oversized or wrong-version messages get an
:class:`~membraind_client.messages.ErrorReply` saying what was wrong; nothing is ever
unpickled. A submission goes through the daemon's one submit function.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable

from membraind_client.messages import (
    PROTOCOL_VERSION, Cancel, CancelReply, ErrorReply, JobList, JobStatus, ListJobs, ModelList, Models,
    Ping, Pong, Status, Submit, Submitted, parse_request,
)  # fmt: skip
from pydantic import BaseModel, ValidationError

from membraind import __version__
from membraind.errors import InputError, MembraindError, describe_validation_error
from membraind.service.events import EventFeed
from membraind.service.job import Job, JobRecord, job_from_request
from membraind.service.journal import Journal

__all__ = ["ApiHandler", "SOURCE"]

log = logging.getLogger(__name__)

SOURCE = "zmq"
REQUEST_TYPES = "ping, submit, status, list, cancel, models"


class ApiHandler:
    """Answers API requests against the daemon's journal and its submit and cancel functions."""

    def __init__(
        self, journal: Journal, submit: Callable[[Job], tuple[JobRecord, bool]],
        cancel: Callable[[str], JobRecord | None], models: Callable[[], list], feed: EventFeed, max_bytes: int,
    ) -> None:  # fmt: skip
        self.journal, self.submit, self.cancel, self.models, self.feed = journal, submit, cancel, models, feed
        self.max_bytes = max_bytes
        self.started = time.time()

    def handle(self, frames: list[bytes], client: str | None = None) -> bytes:
        """The reply (JSON) to one request given as its body frames; ``client`` names an authenticated key."""
        try:
            reply = self._answer(frames, client)
        except Exception as exc:  # a bug must cost one error reply, never the server
            log.exception("API request failed")
            reply = ErrorReply(code="internal", message=f"the daemon failed on this request ({type(exc).__name__}: "
                                                        f"{exc}); its log has the details")  # fmt: skip
        return reply.model_dump_json().encode()

    def _answer(self, frames: list[bytes], client: str | None) -> BaseModel:
        if len(frames) != 1:
            return _error("bad-message", f"a request is one frame holding a JSON object; got {len(frames)} frames")
        raw = frames[0]
        if len(raw) > self.max_bytes:
            return _error("too-large", f"the request is {len(raw)} bytes; at most {self.max_bytes} are accepted")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error("bad-message", f"the request is not UTF-8 JSON: {exc}")
        if not isinstance(data, dict):
            return _error("bad-message", f"a request is a JSON object, not {type(data).__name__}")
        version = data.get("v")
        if version != PROTOCOL_VERSION:
            return _error("unsupported-version", f"this daemon speaks protocol version {PROTOCOL_VERSION}; the request "
                                                 f"has v={json.dumps(version)}: use a membraind-client matching the daemon")  # fmt: skip
        try:
            request = parse_request(data)
        except ValidationError as exc:
            known = data.get("type") in REQUEST_TYPES.split(", ")
            hint = "" if known else f" (type must be one of: {REQUEST_TYPES})"
            return _error("invalid", f"invalid {data.get('type', 'request')!r} request: {describe_validation_error(exc)}{hint}")
        if isinstance(request, Ping):
            return Pong(daemon_version=__version__, started=self.started, counts=self.journal.counts())
        if isinstance(request, Submit):
            return self._submit(request, client)
        if isinstance(request, Status):
            job_id = self._job_id(request.job_id)
            if not isinstance(job_id, str):
                return job_id
            seq = self.feed.seq(job_id)  # first: the record read next holds at least that event's change
            record = self.journal.get(job_id)
            if record is None:
                return _not_found(request.job_id)
            return JobStatus(job=record, epoch=self.feed.epoch, seq=seq)
        if isinstance(request, ListJobs):
            records = self.journal.list(states=tuple(request.states) if request.states else None, limit=request.limit)
            return JobList(jobs=records, counts=self.journal.counts())
        if isinstance(request, Cancel):
            job_id = self._job_id(request.job_id)
            if not isinstance(job_id, str):
                return job_id
            record = self.cancel(job_id)
            return _not_found(request.job_id) if record is None else CancelReply(job=record)
        if isinstance(request, Models):
            return ModelList(models=self.models())
        raise AssertionError(f"unhandled request {request!r}")

    def _job_id(self, given: str) -> str | ErrorReply:
        """The whole id of the job ``given`` names (its id or a unique start of it), or the error reply."""
        try:
            record = self.journal.find(given)
        except InputError as exc:  # the start of several ids
            return _error("invalid", str(exc))
        return _not_found(given) if record is None else record.id

    def _submit(self, request: Submit, client: str | None) -> BaseModel:
        data = dict(request.spec)
        for name, value in (("id", request.job_id), ("priority", request.priority)):
            if name in data:
                return _error("invalid", f"spec.{name}: give the {name} beside the spec (job_id, priority), not in it")
            if value is not None:
                data[name] = value
        try:
            job = job_from_request(data, source=SOURCE, client=client)
            record, created = self.submit(job)
        except MembraindError as exc:  # RequestError (the spec) or InputError (paths outside the roots)
            return _error("invalid", str(exc))
        return Submitted(job=record, created=created)


def _error(code: str, message: str) -> ErrorReply:
    return ErrorReply(code=code, message=message)


def _not_found(job_id: str) -> ErrorReply:
    return _error("not-found", f"no job with id {job_id!r}; `list` shows the recent jobs")
