"""Job events for the PUB stream: per-job sequence numbers, handed to the socket thread.

The dispatcher calls :meth:`EventFeed.on_job` from whatever thread changed a job; the
ZeroMQ thread, the only one that touches sockets, drains :meth:`EventFeed.pending`
when the feed's wake-up pipe becomes readable.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from typing import Callable

from membraind_client.messages import Event

from membraind.service.job import JobRecord

__all__ = ["EventFeed"]

MAX_PENDING = 10_000  # events are hints; under a flood the oldest are dropped and subscribers re-sync


class EventFeed:
    """Numbers each job's events 1, 2, 3 ... within an ``epoch`` (one per daemon run)."""

    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue[Event] = queue.Queue(MAX_PENDING)
        self._subscribers: list[Callable[[Event], None]] = []
        self.wake_fd, self._wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_write, False)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Also hand every event to ``callback`` (called in the thread that changed the job;
        it must return at once, e.g. the console passing the event to its own loop)."""
        self._subscribers.append(callback)

    def seq(self, job_id: str) -> int:
        """The sequence number of the job's last event (0: none this epoch)."""
        with self._lock:
            return self._seq.get(job_id, 0)

    def on_job(self, record: JobRecord | None) -> None:
        """Dispatcher listener: queue an event for ``record``'s new state or progress."""
        if record is None:
            return
        with self._lock:
            seq = self._seq.get(record.id, 0) + 1
            if record.final:
                self._seq.pop(record.id, None)  # bounded memory; a finished job's status needs no seq
            else:
                self._seq[record.id] = seq
            event = Event(
                job_id=record.id, epoch=self.epoch, seq=seq, kind=record.kind, state=record.state,
                progress=record.progress, message=record.message, progress_detail=record.progress_detail,
                error=record.error, time=time.time(),
            )  # fmt: skip
            try:
                self._pending.put_nowait(event)
            except queue.Full:  # nobody drains (socket thread dead): subscribers see a gap and re-sync
                pass
        for callback in self._subscribers:
            callback(event)
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def pending(self) -> list[Event]:
        """Every event not yet published (called by the socket thread)."""
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        events = []
        while True:
            try:
                events.append(self._pending.get_nowait())
            except queue.Empty:
                return events

    def close(self) -> None:
        """Close the wake-up pipe."""
        for fd in (self.wake_fd, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
