"""Running queued jobs: what a queue consumer does with a job id, in ``serve`` or a worker.

:meth:`JobRunner.execute` claims the job in the journal under this worker's name and a
lease, keeps the lease renewed while the engine process runs the job (a
:class:`LeaseKeeper` thread), and records how it ended. A worker that loses its lease
(cut off from the journal long enough for the scheduler to hand the job to another
worker) stops the job and records nothing: the job is someone else's now.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from membraind_client.progress import Progress, ProgressReporter

from membraind.errors import Cancelled
from membraind.service.engine.process import EngineProcess, JobFailed
from membraind.service.job import Job, JobRecord
from membraind.service.journal.base import Journal
from membraind.service.priority import queue_of
from membraind.service.settings import ServiceSettings

__all__ = ["JobRunner", "LeaseKeeper", "worker_name"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes to the journal, per job
CANCEL_CHECK_INTERVAL = 0.5


def worker_name(role: str) -> str:
    """This host's worker called ``role`` (``serve``, ``gpu0``, ...): unique in a cluster."""
    return f"{socket.gethostname()}:{role}"


class LeaseKeeper:
    """Renews ``worker``'s lease on a running job every third of ``lease_seconds``, in a thread.

    ``lost`` is set once the journal says the worker no longer holds the job.
    """

    def __init__(self, journal: Journal, job_id: str, worker: str, lease_seconds: float) -> None:
        self.journal, self.job_id, self.worker, self.lease_seconds = journal, job_id, worker, lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:12]}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.lease_seconds / 3):
            try:
                if not self.journal.renew(self.job_id, self.worker, self.lease_seconds):
                    log.warning("job %s: %s no longer holds it (its lease ran out and it was taken over); stopping "
                                "it here", self.job_id, self.worker)  # fmt: skip
                    self.lost.set()
                    return
            except Exception as exc:  # the journal unreachable for a moment: the lease has slack
                log.warning("job %s: could not renew the lease (%s: %s); trying again", self.job_id,
                            type(exc).__name__, exc)  # fmt: skip


class JobRunner:
    """Runs jobs as ``worker`` in ``engines`` (one per queue), recording them in ``journal``.

    ``enqueue(record, delay)`` queues a retry; ``notify(record)`` announces a change.
    """

    def __init__(self, service: ServiceSettings, journal: Journal, engines: dict[str, EngineProcess], worker: str,
                 enqueue: Callable[[JobRecord, float], None], notify: Callable[[JobRecord | None], None]) -> None:  # fmt: skip
        self.service = service
        self.journal, self.engines, self.worker = journal, engines, worker
        self.lease_seconds = self.service.queue.lease_seconds
        self.enqueue, self.notify = enqueue, notify
        self.stopping = threading.Event()

    def execute(self, job_id: str) -> None:
        """Run one job (called by a queue consumer with the job's id)."""
        if self.stopping.is_set():  # taken from the queue as the consumer stops: put it back for another worker
            record = self.journal.get(job_id)
            if record is not None and record.state == "queued":
                self.enqueue(record, 0.0)
            return
        record = self.journal.claim(job_id, self.worker, self.lease_seconds)
        if record is None:  # cancelled (perhaps by another process), run elsewhere, or queued twice
            self.notify(self.journal.get(job_id))
            return
        self.notify(record)
        limit = self.service.max_attempts + 2
        if record.attempts > limit:
            self.journal.fail(job_id, f"started {record.attempts - 1} times without finishing (its worker was "
                                      "killed each time); resubmit it if it should run", self.worker)  # fmt: skip
            self.notify(self.journal.get(job_id))
            return
        with LeaseKeeper(self.journal, job_id, self.worker, self.lease_seconds) as lease:
            self._run(record, lease)
        self.notify(self.journal.get(job_id))

    def _run(self, record: JobRecord, lease: LeaseKeeper) -> None:
        job_id, engine = record.id, self.engines[queue_of(record.kind)]
        try:
            result = engine.run(self.job_for_attempt(record), self._progress(job_id), self._should_stop(job_id, lease))
        except Cancelled as exc:
            if lease.lost.is_set():
                return  # taken over: the new holder records it
            if self.stopping.is_set() and not self.journal.cancel_requested(job_id):
                message = f"interrupted by a stop of {self.worker} ({exc}); continues when a worker is free"
                if self.journal.requeue(job_id, message, self.worker, refund_attempt=True):
                    self.enqueue(record, 0.0)  # another worker of the cluster may take it at once
            else:
                self.journal.cancelled(job_id, str(exc), self.worker)
        except JobFailed as exc:
            self._failed(record, exc)
        except Exception as exc:  # the engine could not even be started
            log.exception("job %s could not be run", job_id)
            self._failed(record, JobFailed(f"{type(exc).__name__}: {exc}", retry=True))
        else:
            if self.journal.finish(job_id, result, self.worker):
                log.info("job %s done: %s", job_id, result.summary)
            else:
                log.warning("job %s finished here but was taken over meanwhile; the other worker's run counts", job_id)

    def job_for_attempt(self, record: JobRecord) -> Job:
        """The job of a claimed ``record`` as the engine runs it now: ``restart`` only the first time.

        ``restart`` means "start this run over", once: a retry after a crash, or a run
        interrupted by a stop (whose attempt is refunded) or by a killed worker, resumes
        from the checkpoint the earlier run left. The journal's events tell whether the
        job ran before (``claim`` has just added the current "running").
        """
        job = record.job()
        if not getattr(job.spec, "restart", False) or self.journal.runs(job.id) <= 1:
            return job
        log.info("job %s ran before: resuming its run in %s instead of starting over (restart)", job.id, job.spec.out)
        return job.model_copy(update={"spec": job.spec.model_copy(update={"restart": False})})

    def _failed(self, record: JobRecord, exc: JobFailed) -> None:
        attempts = record.attempts
        if exc.retry and attempts < self.service.max_attempts:
            delay = 0.0 if self.stopping.is_set() else self.service.retry_delay_seconds * 2 ** (attempts - 1)
            message = f"attempt {attempts} failed: {exc}; retrying in {delay:.0f} s"
            if self.journal.requeue(record.id, message, self.worker, delay=delay):
                self.enqueue(record, delay)
            log.warning("job %s attempt %d failed (%s); retry in %.0f s", record.id, attempts, exc, delay)
        else:
            tries = f" (gave up after {attempts} attempts)" if exc.retry else ""
            self.journal.fail(record.id, f"{exc}{tries}", self.worker)
            log.warning("job %s failed: %s%s", record.id, exc, tries)

    def _progress(self, job_id: str) -> ProgressReporter:
        last = [0.0]

        def progress(report: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or report.fraction >= 1.0:
                last[0] = now
                self.journal.progress(job_id, report)
                self.notify(self.journal.get(job_id))

        return progress

    def _should_stop(self, job_id: str, lease: LeaseKeeper) -> Callable[[], bool]:
        last, answer = [0.0], [False]

        def should_stop() -> bool:
            if self.stopping.is_set() or lease.lost.is_set():
                return True
            now = time.monotonic()
            if now - last[0] >= CANCEL_CHECK_INTERVAL:  # another process (membraind cancel) may have asked
                last[0], answer[0] = now, self.journal.cancel_requested(job_id)
            return answer[0]

        return should_stop
