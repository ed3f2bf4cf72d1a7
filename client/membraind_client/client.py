"""A small client for the daemon's ZeroMQ API, with the Lazy Pirate retry pattern.

Each request goes out on a REQ socket; when no reply comes within ``timeout`` seconds
the socket is closed and reopened and the same request sent again, up to ``retries``
times (zguide chapter 4). Submissions carry a job id chosen here, so a resend after a
lost reply finds the job the first copy made instead of making a second one.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import zmq
from pydantic import ValidationError

from membraind_client.keys import load_key_pair, load_public_key
from membraind_client.messages import (
    FINAL_STATES, Cancel, CancelReply, ErrorReply, Event, JobInfo, JobList, JobStatus, ListJobs, ModelInfo, ModelList, Models,
    Ping, Pong, Status, Submit, Submitted, event_topic, parse_event, parse_reply,
)  # fmt: skip

__all__ = ["Client", "default_events", "ClientError", "DaemonUnreachable", "RequestRejected", "DEFAULT_ENDPOINT", "DEFAULT_EVENTS"]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5571"
DEFAULT_EVENTS = "tcp://127.0.0.1:5572"


def default_events(endpoint: str) -> str:
    """$MEMBRAIND_EVENTS, else a tcp endpoint's host one port up (the daemon's defaults are 5571 and 5572)."""
    if os.environ.get("MEMBRAIND_EVENTS"):
        return os.environ["MEMBRAIND_EVENTS"]
    match = re.fullmatch(r"(tcp://.+):(\d+)", endpoint)
    return f"{match[1]}:{int(match[2]) + 1}" if match else DEFAULT_EVENTS


class ClientError(Exception):
    """Base of the client's errors; the message is meant for people."""


class DaemonUnreachable(ClientError):
    """No reply after every retry: the daemon is not running, not reachable, or refuses our key."""


class RequestRejected(ClientError):
    """The daemon answered with an error reply (``code``: bad-message, invalid, not-found ...)."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.code = reply.code


class Client:
    """Talks to one daemon.

    ``endpoint`` is the daemon's API address and ``events`` its event stream (defaults:
    ``$MEMBRAIND_ENDPOINT``, else tcp://127.0.0.1:5571; ``$MEMBRAIND_EVENTS``, else a
    tcp endpoint's port plus one).
    With CurveZMQ on, give the server's public key file (``server_key``) and this
    client's key pair (``key``, a ``.key_secret`` file).
    """

    def __init__(
        self, endpoint: str | None = None, *, events: str | None = None, timeout: float = 2.5,
        retries: int = 3, server_key: Path | None = None, key: Path | None = None,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint or os.environ.get("MEMBRAIND_ENDPOINT") or DEFAULT_ENDPOINT
        self.events_endpoint = events or default_events(self.endpoint)
        self.timeout, self.retries = timeout, retries
        self._curve: tuple[bytes, bytes, bytes] | None = None
        if (server_key is None) != (key is None):
            raise ClientError("CurveZMQ needs both the server's public key file and this client's .key_secret file")
        if server_key is not None:
            public, secret = load_key_pair(key)
            self._curve = (public, secret, load_public_key(server_key))
        self._context = zmq.Context()
        self._socket: zmq.Socket | None = None
        self.resends = 0  # how many times a request went out again (for scripts that want to know)

    # -- plumbing ---------------------------------------------------------------------------
    def _secure(self, socket: zmq.Socket) -> None:
        if self._curve is not None:
            socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = self._curve

    def _open(self) -> zmq.Socket:
        socket = self._context.socket(zmq.REQ)
        socket.linger = 0
        self._secure(socket)
        socket.connect(self.endpoint)
        return socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def request(self, message: Any) -> Any:
        """Send one request and return its reply; resend on timeout (Lazy Pirate).

        Raises :class:`RequestRejected` for an error reply and :class:`DaemonUnreachable`
        when no reply came after ``retries`` resends.
        """
        payload = message.model_dump_json().encode()
        for attempt in range(self.retries + 1):
            if self._socket is None:
                self._socket = self._open()
            if attempt:
                self.resends += 1
            try:
                self._socket.send(payload)
                answered = self._socket.poll(int(self.timeout * 1000), zmq.POLLIN)
                raw = self._socket.recv() if answered else None
            except BaseException:  # e.g. Ctrl-C while waiting: the REQ socket would stay stuck awaiting a reply
                self._drop_socket()
                raise
            if raw is not None:
                reply = parse_reply(raw)
                if isinstance(reply, ErrorReply):
                    raise RequestRejected(reply)
                return reply
            self._drop_socket()  # a REQ socket that got no reply cannot send again: reopen it
        tries = self.retries + 1
        raise DaemonUnreachable(
            f"no reply from the daemon at {self.endpoint} after {tries} {'try' if tries == 1 else 'tries'} "
            f"({tries * self.timeout:.1f} s): is "
            "`membraind serve` running there? With CurveZMQ on, is this client's public key in its authorized_keys?"
        )

    def close(self) -> None:
        """Close the sockets (pending requests are dropped)."""
        self._drop_socket()
        self._context.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the API ----------------------------------------------------------------------------
    def ping(self) -> Pong:
        """The daemon's version, start time and job counts."""
        return self.request(Ping())

    def submit(self, spec: dict[str, Any], *, job_id: str | None = None, priority: int | None = None) -> Submitted:
        """Submit a job (``spec``: a request as in docs/requests.md). A fresh job id is chosen if none is given."""
        spec = dict(spec)  # a request file's fields: id and priority travel beside the spec
        file_id, file_priority = spec.pop("id", None), spec.pop("priority", None)
        job_id = job_id or file_id or uuid.uuid4().hex
        priority = file_priority if priority is None else priority
        try:
            message = Submit(job_id=job_id, priority=priority, spec=spec)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ClientError(f"cannot submit: {problems} (job_id is text of letters, digits and ._:@+-; "
                              "priority a whole number from -100 to 100)") from None  # fmt: skip
        return self.request(message)

    def status(self, job_id: str) -> JobInfo:
        """One job's state; ``job_id`` may be a unique start of the id."""
        return self._status(job_id).job

    def _status(self, job_id: str) -> JobStatus:
        return self.request(Status(job_id=job_id))

    def list(self, states: list[str] | None = None, limit: int = 50) -> JobList:
        """Recent jobs (newest first) and the count in each state."""
        return self.request(ListJobs(states=states, limit=limit))

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job (a running one stops at its next safe point); ``job_id`` may be a unique start of the id."""
        reply: CancelReply = self.request(Cancel(job_id=job_id))
        return reply.job

    def models(self) -> list[ModelInfo]:
        """The model bundles the daemon knows."""
        reply: ModelList = self.request(Models())
        return reply.models

    def wait(self, job_id: str, on_update: Callable[[JobInfo], None] | None = None, *,
             timeout: float | None = None, resync_seconds: float = 10.0) -> JobInfo:  # fmt: skip
        """Follow a job until it ends; returns its final state.

        Progress comes from the event stream (``on_update`` is called on each change);
        a missed event (a gap in its sequence numbers, or a daemon restart) or
        ``resync_seconds`` of silence leads to a status request, so nothing depends on
        every event arriving. Raises TimeoutError after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job_id = self.status(job_id).id  # the whole id, which the event topic names, when given its start
        tracker = EventTracker(job_id)
        sub = self._context.socket(zmq.SUB)
        sub.linger = 0
        self._secure(sub)
        sub.setsockopt(zmq.SUBSCRIBE, event_topic(job_id))
        sub.connect(self.events_endpoint)
        try:
            job = tracker.snapshot(self._status(job_id))  # after subscribing: nothing falls between
            while True:
                if on_update is not None and tracker.changed:
                    on_update(job)
                if job.final:
                    return job
                wait = resync_seconds
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
                event = None
                if sub.poll(int(wait * 1000), zmq.POLLIN):
                    _, raw = sub.recv_multipart()
                    event = parse_event(raw)
                if event is None or tracker.needs_resync(event) or event.state in FINAL_STATES:
                    # the final state is fetched whole: the event does not carry the result
                    job = tracker.snapshot(self._status(job_id))
                else:
                    job = tracker.apply(job, event)
        finally:
            sub.close(linger=0)


class EventTracker:
    """Sequence bookkeeping for one job's events (the zguide "Clone" pattern).

    A status reply is the snapshot (state plus the seq of the last event included in
    it); events with a higher seq update it; a gap or a new epoch means events were
    missed, so the caller asks for status again.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.epoch: str | None = None
        self.seq = 0
        self.changed = False
        self.resyncs = 0
        self._last: tuple | None = None

    def _mark(self, job: JobInfo) -> JobInfo:
        key = (job.state, job.progress, job.message)
        self.changed, self._last = key != self._last, key
        return job

    def snapshot(self, status: JobStatus) -> JobInfo:
        """Take a status reply as the new base."""
        if self.epoch is not None:
            self.resyncs += 1
        self.epoch, self.seq = status.epoch, status.seq
        return self._mark(status.job)

    def needs_resync(self, event: Event) -> bool:
        """Whether ``event`` shows that something was missed (or is an old one to ignore: False)."""
        if event.epoch != self.epoch:
            return True
        return event.seq > self.seq + 1

    def apply(self, job: JobInfo, event: Event) -> JobInfo:
        """``job`` updated by ``event`` (events already in the snapshot change nothing)."""
        if event.seq <= self.seq:
            self.changed = False
            return job
        self.seq = event.seq
        update = {"state": event.state, "progress": event.progress, "message": event.message,
                  "progress_detail": event.progress_detail, "error": event.error}  # fmt: skip
        return self._mark(job.model_copy(update=update))
