"""The Huey queues that dispatch jobs: ``gpu`` (one job at a time per worker, by
priority) and ``cpu``.

Huey only carries job ids; what a job is and where it stands lives in the journal. The
backend is chosen by configuration: with ``sqlite`` both queues share one file in the
state folder (local disk, WAL), apart from the journal's, so a long journal transaction
never stalls a dequeue; with ``redis`` they are priority queues in the shared Redis
server (blocking pops: a worker takes a job the moment it is queued). Messages are
signed JSON, never pickle (:mod:`membraind.service.queue_messages`).

The consumers run as threads of the daemon or worker (never forked: docs/design-notes.md,
"No fork: engines run in spawned processes"), without Huey's signal handling: the process
owns SIGTERM/SIGINT and stops them itself.
"""

from __future__ import annotations

import logging
from typing import Callable

from huey import Huey, PriorityRedisHuey, SqliteHuey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from membraind.service.job import JobRecord
from membraind.service.priority import queue_of
from membraind.service.queue_messages import JsonMessageSerializer, read_secret
from membraind.service.settings import ServiceSettings

__all__ = ["JobQueues", "QUEUES", "QUEUE_FILE", "open_hueys"]

QUEUES = ("gpu", "cpu")
TASK_NAME = "membraind.execute_job"  # stable: a rename would orphan queued tasks
QUEUE_FILE = "queue.db"

log = logging.getLogger(__name__)


class _QueueStorage(SqliteStorage):
    """Huey's SQLite storage without an fsync per enqueue.

    The queue needs no durability of its own: at every start it is flushed and rebuilt
    from the journal (docs/design-notes.md, "The journal is the record of truth"), which
    does fsync. WAL with synchronous=NORMAL can lose the last enqueues at a power cut but
    never corrupts the file; it takes a millisecond or more off every submission.
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


def open_hueys(service: ServiceSettings, timeout: float = 30.0) -> dict[str, Huey]:
    """One Huey per queue on the configured backend.

    ``timeout``: with sqlite, how long a write waits for another connection's lock.
    """
    queue = service.queue
    if queue.backend == "redis":
        serializer = JsonMessageSerializer(read_secret(queue.secret_file))
        return {
            name: PriorityRedisHuey(
                f"{queue.prefix}.{name}", url=queue.redis_url, results=False, serializer=serializer, blocking=True,
                clean_name=False,
                read_timeout=max(1, round(service.queue_poll_seconds)),
            )  # fmt: skip
            for name in QUEUES
        }
    path = service.state_path() / QUEUE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    serializer = JsonMessageSerializer()  # a local file only this host writes: JSON, unsigned
    return {
        name: _QueueHuey(name, filename=str(path), timeout=timeout, results=False, serializer=serializer)
        for name in QUEUES
    }


class JobQueues:
    """The queues in ``hueys`` (see :func:`open_hueys`).

    ``executor(job_id)`` runs a dequeued job; it is set by the process that consumes the
    queues (serve with an embedded worker, or ``membraind worker``) before :meth:`start`.
    """

    def __init__(self, hueys: dict[str, Huey], poll_seconds: float = 0.05) -> None:
        self.hueys, self.poll_seconds = hueys, poll_seconds
        self.executor: Callable[[str], None] | None = None
        self.tasks = {name: huey.task(name=TASK_NAME)(self._execute) for name, huey in self.hueys.items()}
        self.consumers: dict[str, _Consumer] = {}

    def _execute(self, job_id: str) -> None:
        if self.executor is None:
            raise RuntimeError(f"job {job_id}: this process queues jobs but does not run them")
        self.executor(job_id)

    def enqueue(self, job_id: str, queue: str, priority: int, delay: float = 0.0) -> None:
        """Queue ``job_id`` on ``queue`` (after ``delay`` seconds)."""
        if delay > 0:
            self.tasks[queue].schedule(args=(job_id,), delay=delay, priority=priority)
        else:
            self.tasks[queue](job_id, priority=priority)

    def enqueue_job(self, record: JobRecord, delay: float = 0.0) -> None:
        """Queue a journal record's job on the queue of its kind, at its priority."""
        self.enqueue(record.id, queue_of(record.kind), record.priority, delay)

    def flush(self) -> None:
        """Drop every queued and scheduled task and stale lock (start-up: the journal re-queues)."""
        for huey in self.hueys.values():
            huey.flush()

    def pending(self) -> dict[str, int]:
        """Tasks waiting in each queue (scheduled ones included)."""
        return {name: huey.pending_count() + huey.scheduled_count() for name, huey in self.hueys.items()}

    def job_ids(self) -> set[str]:
        """The job ids of every queued and scheduled task, in both queues (reads each message)."""
        return {task.args[0] for huey in self.hueys.values() for task in [*huey.pending(), *huey.scheduled()] if task.args}

    def start(self, queues: tuple[str, ...] = QUEUES) -> None:
        """Start one consumer (one worker thread) for each of ``queues``."""
        for name in queues:
            huey = self.hueys[name]
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
