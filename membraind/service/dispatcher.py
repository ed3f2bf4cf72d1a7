"""Jobs in: the one function every way in calls (:meth:`Dispatcher.submit`), and the
scheduler's periodic care of the queue (exactly one scheduler per cluster: ``serve``).

The scheduler rebuilds the queue from the journal at start, queues again what the
journal holds but the queue lost (:meth:`reconcile`), and takes back jobs whose worker
stopped renewing its lease (:meth:`take_over`). Running jobs is the
:class:`~membraind.service.runner.JobRunner`'s part, in ``serve`` or in workers.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from membraind.nn.settings import TransferSettings
from membraind.service.job import Job, JobRecord
from membraind.service.journal.base import Journal
from membraind.jobs.execute import claim_version
from membraind.service.paths import check_parent_data, check_paths, check_vast_paths
from membraind.service.queues import JobQueues
from membraind.service.settings import ServiceSettings
from membraind.service.split_jobs import SplitJobs

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

Listener = Callable[[JobRecord], None]
RECONCILE_INTERVAL = 60.0  # seconds between journal -> queue reconciliations
# A job queued this recently may still be on its way into Huey (submit writes the journal first).
RECONCILE_MIN_AGE = 30.0


class Dispatcher:
    """Turns jobs into journal records and queued tasks, and keeps the queue true to the journal.

    ``transfer`` gives the fine-tuning mode of requests that name none (episodic ones need
    their parent's data within the roots). ``direct_notifications``: announce this
    process's own changes to the listeners at once (False when a change follower announces
    every change, wherever it was made).
    """

    def __init__(self, service: ServiceSettings, transfer: TransferSettings, journal: Journal, queues: JobQueues, *,
                 direct_notifications: bool = True) -> None:  # fmt: skip
        self.service, self.transfer = service, transfer
        self.journal, self.queues = journal, queues
        self.roots = self.service.allowed_roots()
        self.direct_notifications = direct_notifications
        sections = self.service.queue.sections_per_part()
        self.splits = SplitJobs(journal, queues, sections, self.announce) if sections else None
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
        check_parent_data(job.spec, self.transfer.mode, self.roots)
        check_vast_paths(job.spec, self.service.vast_paths)
        if self.journal.get(job.id) is None:
            # A lab model's version (training, import) is claimed now, so that a run retried after a crash resumes it.
            job = job.model_copy(update={"spec": claim_version(job.spec, self.service.models_path())})
        parts = self.splits.plan(job) if self.splits is not None and job.parent is None else None
        if parts and job.spec.models and self.journal.get(job.id) is None:
            # Every part must predict with one version: "latest" is settled now, not by each part.
            job = job.model_copy(update={"spec": job.spec.with_models_pinned(self.service.models_path())})
            parts = self.splits.plan(job)
        record, created = self.journal.add(job)
        if created and parts:
            self.splits.start(record, parts)
            record = self.journal.get(job.id)
            self.announce(record)
        elif created:
            try:
                self.queues.enqueue_job(record)
            except Exception as exc:  # e.g. "database is locked" for longer than the busy timeout
                log.warning("job %s (%s) is recorded but could not be queued (%s: %s); the next reconciliation "
                            "queues it", job.id, job.spec.kind, type(exc).__name__, exc)  # fmt: skip
            else:
                log.info("job %s (%s) queued from %s", job.id, job.spec.kind, job.source)
            self.announce(record)
        return record, created

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job now, a running one at its next safe point; None if unknown."""
        before = self.journal.get(job_id)
        record = self.journal.request_cancel(job_id)
        if record is not None and before is not None and not before.final:  # a finished job has nothing to announce
            self.announce(record)
            if self.splits is not None and self.splits.is_parent(record):
                self.splits.settle(job_id)  # its queued parts are cancelled now, running ones at their safe point
        return record

    def jobs_starting_with(self, prefix: str, limit: int = 1000) -> list[JobRecord]:
        """The journal's records of the jobs whose id starts with ``prefix`` (at most ``limit``)."""
        records = (self.journal.get(job_id) for job_id in self.journal.ids_starting_with(prefix, limit))
        return [record for record in records if record is not None]

    # -- listeners ----------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(record)`` on every state change and (throttled) progress of any job."""
        self._listeners.append(listener)

    def notify(self, record: JobRecord | None) -> None:
        """Tell every listener about ``record``'s new state (and a split job's, when a part changed)."""
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a listener must never take a job or a worker down
                log.exception("job listener failed")
        if record is not None and record.parent is not None and self.splits is not None:
            try:
                self.splits.settle(record.parent, urgent=record.state != "running")
            except Exception as exc:  # the periodic settling tries again
                log.warning("could not update job %s from its part %s (%s: %s)", record.parent, record.id,
                            type(exc).__name__, exc)  # fmt: skip

    def announce(self, record: JobRecord | None) -> None:
        """Notify a change this process made, unless a follower announces it (direct_notifications)."""
        if self.direct_notifications:
            self.notify(record)

    # -- the scheduler's care of the queue ---------------------------------------------------
    def recover(self, worker: str) -> int:
        """Start-up: give back the jobs ``worker`` (this process's own) held and those
        whose lease expired, and rebuild the queue from the journal. Returns the count queued."""
        self.queues.flush()
        queued = self.journal.recover(worker)
        now = time.time()
        for record in queued:
            self.queues.enqueue_job(record, max(0.0, self.journal.not_before(record.id) - now))
        if queued:
            log.info("re-queued %d job(s) from the journal", len(queued))
        if self.splits is not None:
            self.splits.resume()
        return len(queued)

    def take_over(self) -> int:
        """Queue again every running job whose worker stopped renewing its lease. Returns the count."""
        taken = self.journal.expire_leases()
        for record in taken:
            log.warning("job %s: %s", record.id, record.message)
            self.queues.enqueue_job(record)
            self.announce(record)
        return len(taken)

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
            self.queues.enqueue_job(record)
            log.warning("job %s was queued in the journal but not in the queue; queued it again", record.id)
        return len(missing)

    def periodically(self) -> None:
        """The health loop's turn: take over expired leases and settle split jobs at once,
        reconcile every RECONCILE_INTERVAL seconds; a failure waits for the next turn."""
        try:
            self.take_over()
            if self.splits is not None:
                self.splits.settle_all()
            if time.monotonic() - self._last_reconcile >= RECONCILE_INTERVAL:
                self._last_reconcile = time.monotonic()
                self.reconcile()
        except Exception as exc:  # a locked database or a Redis hiccup now is no reason to take the daemon down
            log.warning("the scheduler's queue check failed (%s: %s); trying again at the next turn",
                        type(exc).__name__, exc)  # fmt: skip
