"""Jobs in, jobs run: the one function every way in calls (:meth:`Dispatcher.submit`), and
what the queue workers call to run a job (:meth:`Dispatcher.execute`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from membraind.config import Settings
from membraind.jobs.specs import queue_of
from membraind.service.engine import EngineProcess, JobCancelled, JobFailed
from membraind.service.jobs import Job, JobRecord
from membraind.service.journal import Journal
from membraind.service.paths import check_parent_data, check_paths
from membraind.service.queues import JobQueues

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

Listener = Callable[[JobRecord], None]
PROGRESS_INTERVAL = 0.5  # seconds between progress writes to the journal, per job
CANCEL_CHECK_INTERVAL = 0.5
RECONCILE_INTERVAL = 60.0  # seconds between the health loop's journal -> queue reconciliations
# A job queued this recently may still be on its way into Huey (submit writes the journal first).
RECONCILE_MIN_AGE = 30.0


class Dispatcher:
    """Turns jobs into journal rows and queued tasks, and runs them in the engine processes."""

    def __init__(self, settings: Settings, journal: Journal, queue_path, engines: dict[str, EngineProcess],
                 queue_timeout: float = 30.0) -> None:  # fmt: skip
        self.settings, self.service = settings, settings.service
        self.journal = journal
        self.engines = engines
        self.roots = self.service.allowed_roots()
        self.queues = JobQueues(queue_path, self.execute, self.service.queue_poll_seconds, timeout=queue_timeout)
        self.stopping = threading.Event()
        self._listeners: list[Listener] = []
        self._last_reconcile = time.monotonic()

    # -- ways in ------------------------------------------------------------------------
    def submit(self, job: Job) -> tuple[JobRecord, bool]:
        """Check ``job``'s paths, record it and queue it; returns (record, created).

        A job id seen before is not queued again (created is False). Raises
        :class:`~membraind.errors.InputError` when a path is outside the roots. Once the
        journal holds the job it is never lost: if Huey cannot take it now, :meth:`reconcile`
        queues it later.
        """
        check_paths(job.spec, self.roots)
        check_parent_data(job.spec, self.settings.transfer.mode, self.roots)
        record, created = self.journal.add(job)
        if created:
            try:
                self._enqueue(record)
            except Exception as exc:  # e.g. "database is locked" for longer than the busy timeout
                log.warning("job %s (%s) is recorded but could not be queued (%s: %s); the next reconciliation "
                            "queues it", job.id, job.spec.kind, type(exc).__name__, exc)  # fmt: skip
            else:
                log.info("job %s (%s) queued from %s", job.id, job.spec.kind, job.source)
            self._notify(record)
        return record, created

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job now, a running one at its next safe point; None if unknown."""
        before = self.journal.get(job_id)
        record = self.journal.request_cancel(job_id)
        if record is not None and before is not None and not before.final:  # a finished job has nothing to announce
            self._notify(record)
        return record

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(record)`` on every state change and (throttled) progress of any job."""
        self._listeners.append(listener)

    def _notify(self, record: JobRecord | None) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a listener must never take a job or a worker down
                log.exception("job listener failed")

    def _enqueue(self, record: JobRecord, delay: float = 0.0) -> None:
        self.queues.enqueue(record.id, queue_of(record.kind), record.priority, delay)

    def recover(self) -> int:
        """Start-up: rebuild the queues from the journal (running jobs were interrupted). Returns the count."""
        self.queues.flush()
        queued = self.journal.recover()
        now = time.time()
        for record in queued:
            self._enqueue(record, max(0.0, self.journal.not_before(record.id) - now))
        if queued:
            log.info("re-queued %d job(s) from the journal", len(queued))
        return len(queued)

    def reconcile(self, min_age: float = RECONCILE_MIN_AGE) -> int:
        """Queue again every job the journal holds as queued and due, unchanged for ``min_age``
        seconds, that Huey holds in neither queue nor schedule (its enqueue failed). Returns the count.

        Cheap when nothing waits: one journal query, and Huey is read only when that finds jobs.
        A job queued twice is harmless (the second copy finds nothing to claim).
        """
        due = self.journal.due(time.time() - min_age)
        if not due:
            return 0
        in_huey = self.queues.job_ids()
        missing = [record for record in due if record.id not in in_huey]
        for record in missing:
            self._enqueue(record)
            log.warning("job %s was queued in the journal but not in the queue; queued it again", record.id)
        return len(missing)

    def reconcile_periodically(self) -> None:
        """Health loop: :meth:`reconcile` every RECONCILE_INTERVAL seconds; a failure waits for the next turn."""
        if time.monotonic() - self._last_reconcile < RECONCILE_INTERVAL:
            return
        self._last_reconcile = time.monotonic()
        try:
            self.reconcile()
        except Exception as exc:  # a locked database now is no reason to take the daemon down
            log.warning("journal -> queue reconciliation failed (%s: %s); trying again in %.0f s",
                        type(exc).__name__, exc, RECONCILE_INTERVAL)  # fmt: skip

    # -- running ------------------------------------------------------------------------
    def execute(self, job_id: str) -> None:
        """Run one job (called by a queue worker with the job's id)."""
        if self.stopping.is_set():
            return  # still queued in the journal: the next start re-queues it
        record = self.journal.claim(job_id)
        if record is None:  # cancelled (perhaps by another process), already run, or queued twice
            self._notify(self.journal.get(job_id))
            return
        self._notify(record)
        job = self.job_for_attempt(record)
        limit = self.service.max_attempts + 2
        if record.attempts > limit:
            self.journal.fail(job_id, f"started {record.attempts - 1} times without finishing (the daemon was "
                                      "killed each time); resubmit it if it should run")  # fmt: skip
            self._notify(self.journal.get(job_id))
            return
        engine = self.engines[queue_of(record.kind)]
        try:
            result = engine.run(job, self._progress(job_id), self._should_stop(job_id))
        except JobCancelled as exc:
            if self.stopping.is_set() and not self.journal.cancel_requested(job_id):
                self.journal.requeue(job_id, f"interrupted by a daemon stop ({exc}); continues at the next start",
                                     refund_attempt=True)  # fmt: skip
            else:
                self.journal.cancelled(job_id, str(exc))
        except JobFailed as exc:
            self._failed(record, exc)
        except Exception as exc:  # the engine could not even be started
            log.exception("job %s could not be run", job_id)
            self._failed(record, JobFailed(f"{type(exc).__name__}: {exc}", retry=True))
        else:
            self.journal.finish(job_id, result)
            log.info("job %s done: %s", job_id, result.summary)
        self._notify(self.journal.get(job_id))

    def job_for_attempt(self, record: JobRecord) -> Job:
        """The job of a claimed ``record`` as the engine runs it now: ``restart`` only the first time.

        ``restart`` means "start this run over", once: a retry after a crash, or a run
        interrupted by a stop (whose attempt is refunded) or by a killed daemon, resumes
        from the checkpoint the earlier run left. The journal's events tell whether the
        job ran before (``claim`` has just added the current "running").
        """
        job = record.job()
        if not getattr(job.spec, "restart", False):
            return job
        runs = sum(1 for event in self.journal.events(job.id) if event[3] == "running")
        if runs <= 1:
            return job
        log.info("job %s ran before: resuming its run in %s instead of starting over (restart)", job.id, job.spec.out)
        return job.model_copy(update={"spec": job.spec.model_copy(update={"restart": False})})

    def _failed(self, record: JobRecord, exc: JobFailed) -> None:
        attempts = record.attempts
        if exc.retry and attempts < self.service.max_attempts:
            delay = 0.0 if self.stopping.is_set() else self.service.retry_delay_seconds * 2 ** (attempts - 1)
            self.journal.requeue(record.id, f"attempt {attempts} failed: {exc}; retrying in {delay:.0f} s", delay=delay)
            if not self.stopping.is_set():
                self._enqueue(record, delay)
            log.warning("job %s attempt %d failed (%s); retry in %.0f s", record.id, attempts, exc, delay)
        else:
            tries = f" (gave up after {attempts} attempts)" if exc.retry else ""
            self.journal.fail(record.id, f"{exc}{tries}")
            log.warning("job %s failed: %s%s", record.id, exc, tries)

    def _progress(self, job_id: str) -> Callable[[float, str], None]:
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
                last[0] = now
                self.journal.progress(job_id, fraction, message)
                self._notify(self.journal.get(job_id))

        return progress

    def _should_stop(self, job_id: str) -> Callable[[], bool]:
        last, answer = [0.0], [False]

        def should_stop() -> bool:
            if self.stopping.is_set():
                return True
            now = time.monotonic()
            if now - last[0] >= CANCEL_CHECK_INTERVAL:  # another process (membraind cancel) may have asked
                last[0], answer[0] = now, self.journal.cancel_requested(job_id)
            return answer[0]

        return should_stop
