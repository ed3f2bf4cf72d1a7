"""The Huey queues that dispatch jobs: ``gpu`` (one worker, by priority) and ``cpu``.

Huey only carries job ids; what a job is and where it stands lives in the journal. Both
queues share one SQLite file (on local disk, WAL), apart from the journal's, so a long
journal transaction never stalls a dequeue. The consumers run as threads of the daemon
(never forked workers, design decision 3), without Huey's signal handling: the daemon
owns SIGTERM/SIGINT and stops the consumers itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from huey import SqliteHuey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

__all__ = ["JobQueues", "QUEUES"]

QUEUES = ("gpu", "cpu")
TASK_NAME = "membraind.execute_job"  # stable: a rename would orphan queued tasks

log = logging.getLogger(__name__)


class _QueueStorage(SqliteStorage):
    """Huey's SQLite storage without an fsync per enqueue.

    The queue needs no durability of its own: at every start it is flushed and rebuilt
    from the journal (design decision 1), which does fsync. WAL with synchronous=NORMAL
    can lose the last enqueues at a power cut but never corrupts the file; it takes a
    millisecond or more off every submission.
    """

    def _create_connection(self):  # noqa: ANN202 - Huey's signature
        connection = super()._create_connection()
        connection.execute("pragma synchronous=NORMAL")
        return connection


class _QueueHuey(SqliteHuey):
    storage_class = _QueueStorage


class _Consumer(Consumer):
    """A Huey consumer that leaves signal handling to the daemon (and so may start off the main thread)."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueues:
    """The two queues in the SQLite file ``path``; ``execute(job_id)`` runs a dequeued job."""

    def __init__(self, path: Path, execute: Callable[[str], None], poll_seconds: float = 0.05,
                 timeout: float = 30.0) -> None:  # fmt: skip
        """``timeout``: how long a write waits for a lock held by another connection (SQLite's busy timeout)."""
        self.path, self.poll_seconds = Path(path), poll_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hueys = {name: _QueueHuey(name, filename=str(self.path), timeout=timeout, results=False) for name in QUEUES}
        self.tasks = {name: huey.task(name=TASK_NAME)(execute) for name, huey in self.hueys.items()}
        self.consumers: dict[str, _Consumer] = {}

    def enqueue(self, job_id: str, queue: str, priority: int, delay: float = 0.0) -> None:
        """Queue ``job_id`` on ``queue`` (after ``delay`` seconds)."""
        if delay > 0:
            self.tasks[queue].schedule(args=(job_id,), delay=delay, priority=priority)
        else:
            self.tasks[queue](job_id, priority=priority)

    def flush(self) -> None:
        """Drop every queued and scheduled task and stale lock (start-up: the journal re-queues)."""
        for huey in self.hueys.values():
            huey.flush()

    def pending(self) -> dict[str, int]:
        """Tasks waiting in each queue (scheduled ones included)."""
        return {name: huey.pending_count() + huey.scheduled_count() for name, huey in self.hueys.items()}

    def job_ids(self) -> set[str]:
        """The job ids of every queued and scheduled task, in both queues (unpickles each message)."""
        return {task.args[0] for huey in self.hueys.values() for task in [*huey.pending(), *huey.scheduled()] if task.args}

    def start(self) -> None:
        """Start one consumer (one worker thread) per queue."""
        for name, huey in self.hueys.items():
            consumer = _Consumer(
                huey, workers=1, periodic=False, initial_delay=self.poll_seconds, max_delay=self.poll_seconds,
                backoff=1.0, worker_type="thread", check_worker_health=True,
            )  # fmt: skip
            consumer.start()
            self.consumers[name] = consumer

    def healthy(self) -> bool:
        """Whether every consumer's worker and scheduler threads are alive (dead ones are restarted)."""
        return all(consumer.check_worker_health() for consumer in self.consumers.values())

    def stop(self) -> None:
        """Stop the consumers, letting each worker finish the job it runs."""
        for consumer in self.consumers.values():
            consumer.stop_flag.set()
        for consumer in self.consumers.values():
            consumer.stop(graceful=True)
        self.consumers.clear()
