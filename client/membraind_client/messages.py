"""The wire messages of membraind's ZeroMQ API, shared by the daemon and the client.

Every message is one JSON object in one frame, carrying the protocol version ``v`` and
a ``type``. A client sends a request (:data:`Request`) to the daemon's ROUTER endpoint
and gets one reply (:data:`Reply`), or an :class:`ErrorReply` saying what was wrong.
The daemon's PUB endpoint publishes an :class:`Event` for every job state change and
(throttled) progress, as two frames: the topic (:func:`event_topic`) and the JSON.
See docs/protocol.md. Nothing here is ever pickled. Replies and events may gain fields
in later versions: they ignore fields they do not know (requests do not).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from membraind_client.progress import Progress

__all__ = [
    "PROTOCOL_VERSION", "MAX_MESSAGE_BYTES", "JOB_ID_PATTERN", "JobState", "FINAL_STATES", "JobResult", "JobInfo",
    "ModelInfo", "Ping", "Submit", "Status", "ListJobs", "Cancel", "Models", "Request", "REQUEST_TYPES",
    "Pong", "Submitted", "JobStatus", "JobList", "CancelReply", "ModelList", "ErrorReply", "ErrorCode", "Reply",
    "Event", "event_topic", "parse_request", "parse_reply", "parse_event",
]  # fmt: skip

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # larger requests get a "too-large" error reply
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES = ("done", "failed", "cancelled")


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a reply or event from a newer daemon may carry more fields

    v: int = Field(PROTOCOL_VERSION, description="protocol version")


# -- what the daemon knows about jobs and models --------------------------------------------
class JobResult(BaseModel):
    """What a finished job produced: its output paths and a line for people."""

    outputs: list[str] = []
    summary: str = ""
    seconds: float | None = Field(None, description="time the engine spent on the job")


class JobInfo(BaseModel):
    """A job as the daemon's journal knows it."""

    id: str
    kind: str
    spec: dict[str, Any]
    priority: int
    source: str = Field(description="how it came in: zmq, request-file, scope, vast, cli")
    client: str | None = Field(description="who sent it: a request file, a CurveZMQ key's name")
    state: JobState
    progress: float = Field(description="fraction done, 0..1")
    message: str = Field(description="what it is doing now, for people")
    progress_detail: Progress | None = Field(
        None, description="while it runs: its last progress report (phase, current/total unit, ETA); else null"
    )
    result: JobResult | None
    error: str | None = Field(description="why it failed, for people")
    attempts: int
    cancel_requested: bool
    worker: str | None = Field(None, description="the worker that runs it, or ran it last (host-gpu0, ...)")
    parent: str | None = Field(None, description="the job this one is a part of (a volume split among workers)")
    created: float = Field(description="epoch seconds")
    started: float | None
    finished: float | None
    updated: float

    @property
    def final(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self.state in FINAL_STATES


class ModelInfo(BaseModel):
    """A model bundle the daemon can use (summary of its model.json)."""

    name: str
    path: str
    created: str | None = None
    classes: list[str] = []
    mip: int | None = None
    parent: str | None = None
    source: str | None = None


# -- requests (client -> daemon) -----------------------------------------------------------
class _Request(_Message):
    model_config = ConfigDict(strict=True, extra="forbid")  # from the network: no coercing true into 1, no unknown fields


_JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN, description="letters, digits and ._:@+- (at most 128)")]


class Ping(_Request):
    """Is the daemon there? Replies :class:`Pong`."""

    type: Literal["ping"] = "ping"


class Submit(_Request):
    """Submit a job. ``spec`` is a request as in docs/requests.md (``kind`` and its fields).

    ``job_id`` should be chosen by the client (the :class:`~membraind_client.Client`
    does): a resend after a lost reply then finds the same job instead of making a second.
    """

    type: Literal["submit"] = "submit"
    job_id: _JobId | None = None
    priority: int | None = Field(None, ge=-100, le=100, description="higher runs first (default: by kind)")
    spec: dict[str, Any] = Field(description="the job: kind plus its fields, as in a request file")


class Status(_Request):
    """One job's state. Replies :class:`JobStatus`."""

    type: Literal["status"] = "status"
    job_id: _JobId


class ListJobs(_Request):
    """Recent jobs, newest first, and the count in each state. Replies :class:`JobList`."""

    type: Literal["list"] = "list"
    states: list[JobState] | None = Field(None, description="only jobs in these states")
    limit: int = Field(50, ge=1, le=1000)


class Cancel(_Request):
    """Cancel a queued job now or a running one at its next safe point. Replies :class:`CancelReply`."""

    type: Literal["cancel"] = "cancel"
    job_id: _JobId


class Models(_Request):
    """The model bundles the daemon knows. Replies :class:`ModelList`."""

    type: Literal["models"] = "models"


REQUEST_TYPES = (Ping, Submit, Status, ListJobs, Cancel, Models)
Request = Annotated[Union[REQUEST_TYPES], Field(discriminator="type")]


# -- replies (daemon -> client) ------------------------------------------------------------
class Pong(_Message):
    type: Literal["pong"] = "pong"
    daemon_version: str
    started: float = Field(description="when the daemon started, epoch seconds")
    counts: dict[str, int] = Field(description="jobs in each state")


class Submitted(_Message):
    type: Literal["submitted"] = "submitted"
    job: JobInfo
    created: bool = Field(description="false: a job with this id existed already (a resend); this is its state")


class JobStatus(_Message):
    type: Literal["status"] = "status"
    job: JobInfo
    epoch: str = Field(description="the event stream this seq belongs to (changes when the daemon restarts)")
    seq: int = Field(description="sequence number of the job's last published event (0: none yet)")


class JobList(_Message):
    type: Literal["jobs"] = "jobs"
    jobs: list[JobInfo]
    counts: dict[str, int]


class CancelReply(_Message):
    type: Literal["cancelled"] = "cancelled"
    job: JobInfo


class ModelList(_Message):
    type: Literal["models"] = "models"
    models: list[ModelInfo]


ErrorCode = Literal["bad-message", "too-large", "unsupported-version", "invalid", "not-found", "internal"]


class ErrorReply(_Message):
    """The request could not be carried out; ``message`` says why and what to do."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str


REPLY_TYPES = (Pong, Submitted, JobStatus, JobList, CancelReply, ModelList, ErrorReply)
Reply = Annotated[Union[REPLY_TYPES], Field(discriminator="type")]


# -- events (daemon PUB -> subscribers) ----------------------------------------------------
class Event(_Message):
    """A job changed state or made progress. Hints only: a gap in ``seq`` means re-sync by status."""

    type: Literal["event"] = "event"
    job_id: str
    epoch: str = Field(description="changes when the daemon restarts; seq starts again at 1")
    seq: int = Field(description="per job: 1, 2, 3 ... within one epoch")
    kind: str
    state: JobState
    progress: float
    message: str
    progress_detail: Progress | None = Field(None, description="as in JobInfo")
    error: str | None = None
    time: float


def event_topic(job_id: str | None = None) -> bytes:
    """The PUB topic of a job's events (subscribe to ``event_topic()`` for every job)."""
    return b"job " if job_id is None else f"job {job_id}|".encode()  # '|' cannot occur in a job id


_REQUEST = TypeAdapter(Request)
_REPLY = TypeAdapter(Reply)


def parse_request(data: dict) -> Ping | Submit | Status | ListJobs | Cancel | Models:
    """A request from its decoded JSON (raises pydantic's ValidationError)."""
    return _REQUEST.validate_python(data)


def parse_reply(raw: bytes) -> Pong | Submitted | JobStatus | JobList | CancelReply | ModelList | ErrorReply:
    """A reply from its JSON frame (raises pydantic's ValidationError)."""
    return _REPLY.validate_json(raw)


def parse_event(raw: bytes) -> Event:
    """An event from its JSON frame (raises pydantic's ValidationError)."""
    return Event.model_validate_json(raw)
