"""The daemon's job events, the same ones the ZeroMQ PUB socket sends, fanned out to every
open console page as server-sent events.

The daemon's :class:`~membraind.service.events.EventFeed` hands each event to
:meth:`LiveEvents.publish` in whatever thread changed the job; it is passed to the
console's event loop and put in each page's queue. Memory stays constant however long a
page is open: each queue holds at most MAX_QUEUED events (a page that falls behind gets
"resync" and reloads what it shows), and at most MAX_STREAMS pages listen at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from membraind_client.messages import Event

__all__ = ["LiveEvents", "MAX_STREAMS", "MAX_QUEUED", "KEEPALIVE_SECONDS"]

MAX_STREAMS = 64
MAX_QUEUED = 200
KEEPALIVE_SECONDS = 15.0  # a comment line now and then: proxies keep the connection, browsers notice a dead one
RETRY_MS = 2000  # how soon a browser reconnects after the daemon went away
_RESYNC, _END = "resync", None


class LiveEvents:
    """Job events for the browsers of one daemon run (``epoch``: the event feed's)."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: set[asyncio.Queue] = set()

    @property
    def listeners(self) -> int:
        """Pages listening now."""
        return len(self._queues)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The console's event loop (set when the server starts)."""
        self._loop = loop

    def publish(self, event: Event) -> None:
        """Event feed subscriber: called from any thread, returns at once."""
        loop = self._loop
        if loop is None or not self._queues or loop.is_closed():
            return
        data = json.dumps({
            "id": event.job_id, "kind": event.kind, "state": event.state, "progress": event.progress,
            "message": event.message, "error": event.error,
            "eta": event.progress_detail.eta if event.progress_detail is not None else "",
        })  # fmt: skip
        try:
            loop.call_soon_threadsafe(self._fan_out, data)
        except RuntimeError:  # the loop closed meanwhile (the daemon is stopping)
            pass

    def _fan_out(self, data: str | None) -> None:
        for queue in self._queues:
            if data is _END or queue.full():  # a page that does not keep up: drop its backlog, let it read the page afresh
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(data if data is _END else _RESYNC)
            else:
                queue.put_nowait(data)

    def close(self) -> None:
        """End every stream (the daemon stops; browsers reconnect to the next run)."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._fan_out, _END)
            except RuntimeError:
                pass

    def full(self) -> bool:
        """Whether another page may not listen now."""
        return len(self._queues) >= MAX_STREAMS

    async def stream(self) -> AsyncIterator[str]:
        """One page's event stream (text/event-stream), until the page goes away or the daemon stops."""
        queue: asyncio.Queue = asyncio.Queue(MAX_QUEUED)
        self._queues.add(queue)
        try:
            yield f"retry: {RETRY_MS}\nevent: hello\ndata: {json.dumps({'epoch': self.epoch})}\n\n"
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if data is _END:
                    return
                yield "event: resync\ndata: {}\n\n" if data == _RESYNC else f"event: job\ndata: {data}\n\n"
        finally:
            self._queues.discard(queue)
