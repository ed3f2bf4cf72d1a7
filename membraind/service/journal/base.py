"""What every journal backend does: the job state machine, leases, and the reads.

The journal is membraind's record of truth about jobs (docs/design-notes.md, "The
journal is the record of truth"). Huey forgets a task the moment a worker takes it, so a
job running when its worker dies would be lost without it. Every job's state::

    queued -> running -> done | failed | cancelled
       ^         |
       +---------+  retry after a crash, re-queued at a graceful stop, or taken over
                    from a worker whose lease expired

A running job is held by one *worker* (a name such as ``lab-pc:serve`` or
``gpu-host-2:gpu0``) under a *lease* that the worker renews while it runs the job. Every
transition out of ``running`` names the worker and applies only while that worker
still holds the job, so a worker that was presumed dead and taken over cannot
overwrite the new holder's record. Every state change is also appended to the events
(per-job sequence numbers): how "each job completed exactly once" can be checked.

Backends: :class:`~membraind.service.journal.sqlite.SqliteJournal` (one file, one host)
and :class:`~membraind.service.journal.redis.RedisJournal` (shared by several hosts).
"""

from __future__ import annotations

import abc
from typing import Any, Iterable

from membraind_client.progress import Progress

from membraind.errors import InputError
from membraind.jobs.execute import JobResult
from membraind.service.job import Job, JobRecord

__all__ = [
    "Journal", "JournalEvent", "COLUMNS", "record_from_values", "stored_progress", "released_message", "expired_message",
]  # fmt: skip

# The fields of a job as both backends store them (the SQLite columns, the Redis hash fields).
COLUMNS = (
    "id", "kind", "spec", "priority", "source", "client", "state", "progress", "message", "result", "error",
    "attempts", "cancel_requested", "worker", "parent", "created", "started", "finished", "updated", "progress_detail",
)  # fmt: skip
MESSAGE_CHARS = 500  # longer progress messages are cut
AMBIGUOUS_SHOWN = 5  # job ids named when a prefix fits several

JournalEvent = tuple  # (seq, job_id, job_seq, state, time, detail)


def record_from_values(values: dict[str, Any]) -> JobRecord:
    """A :class:`JobRecord` from stored values (spec and result as JSON text, flags as 0/1)."""
    import json

    values = dict(values)
    values["spec"] = json.loads(values["spec"])
    values["result"] = JobResult.model_validate_json(values["result"]) if values.get("result") else None
    values["cancel_requested"] = bool(int(values["cancel_requested"]))
    detail = values.get("progress_detail")
    values["progress_detail"] = Progress.model_validate_json(detail) if detail else None  # absent in older journals
    return JobRecord(**values)


def stored_progress(progress: Progress) -> tuple[float, str, str]:
    """(fraction clamped to 0..1, message cut to MESSAGE_CHARS, the whole report as JSON) as a journal stores them."""
    fraction, message = max(0.0, min(1.0, float(progress.fraction))), progress.message[:MESSAGE_CHARS]
    return fraction, message, progress.model_copy(update={"fraction": fraction, "message": message}).model_dump_json()


def released_message(worker: str) -> str:
    """Why a job went back to the queue when its own worker restarted."""
    return f"interrupted: its worker {worker} stopped while it ran"


def expired_message(worker: str | None) -> str:
    """Why a job was taken from a worker that stopped renewing its lease."""
    return f"taken over: its worker {worker or '(unknown)'} stopped renewing its lease (dead or cut off)"


class Journal(abc.ABC):
    """The job journal (see the module docstring for the state machine). Thread-safe."""

    # -- writing -----------------------------------------------------------------------
    @abc.abstractmethod
    def add(self, job: Job) -> tuple[JobRecord, bool]:
        """Record ``job`` as queued; returns (record, created). A known id is not added again."""

    @abc.abstractmethod
    def claim(self, job_id: str, worker: str, lease_seconds: float) -> JobRecord | None:
        """Mark a queued job running under ``worker``'s lease (one more attempt); None if it
        is not queued any more (run elsewhere, cancelled, or queued twice)."""

    @abc.abstractmethod
    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend ``worker``'s lease on a running job; False when the worker no longer holds it."""

    @abc.abstractmethod
    def progress(self, job_id: str, progress: Progress) -> None:
        """Record a running job's progress (its fraction and message, and the whole report as
        ``progress_detail``, which every change of state clears)."""

    @abc.abstractmethod
    def _end(self, job_id: str, worker: str, state: str, *, result: JobResult | None, error: str | None,
             message: str) -> bool:  # fmt: skip
        """Move a job ``worker`` holds to a final state; False when it does not hold it."""

    def finish(self, job_id: str, result: JobResult, worker: str) -> bool:
        """Mark a job done with its result (False: ``worker`` no longer holds it)."""
        return self._end(job_id, worker, "done", result=result, error=None, message=result.summary or "done")

    def fail(self, job_id: str, error: str, worker: str) -> bool:
        """Mark a job failed with the reason, worded for the user."""
        return self._end(job_id, worker, "failed", result=None, error=error, message="failed")

    def cancelled(self, job_id: str, message: str, worker: str) -> bool:
        """Mark a running job cancelled."""
        return self._end(job_id, worker, "cancelled", result=None, error=None, message=message)

    @abc.abstractmethod
    def requeue(self, job_id: str, message: str, worker: str, *, delay: float = 0.0, refund_attempt: bool = False) -> bool:
        """Put a job ``worker`` holds back in the queue (a retry after ``delay`` s, or a stop).

        ``refund_attempt``: the run was stopped on purpose, not failed, so it does not count.
        """

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job: a queued one at once, a running one at its next safe point."""

    @abc.abstractmethod
    def release(self, worker: str) -> list[JobRecord]:
        """Give back every job ``worker`` holds (it restarted, so they were interrupted):
        queued again, or cancelled if that was asked. Returns the jobs now queued."""

    @abc.abstractmethod
    def expire_leases(self) -> list[JobRecord]:
        """Take back every running job whose lease ran out (its worker died or was cut
        off): queued again, or cancelled if that was asked. Returns the jobs now queued."""

    def recover(self, worker: str) -> list[JobRecord]:
        """Start-up of ``worker``'s process: release its jobs and expired leases, then
        return every queued job, oldest first (for rebuilding the queue)."""
        self.release(worker)
        self.expire_leases()
        return self.list(states=("queued",), limit=None, oldest_first=True)

    # -- reading -----------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""

    @abc.abstractmethod
    def ids_starting_with(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` job ids that start with ``prefix``, in id order."""

    def find(self, job_id: str) -> JobRecord | None:
        """The job with this id, or else the one job whose id starts with it (a unique prefix,
        as git and docker take); None when there is none.

        Raises InputError naming some of the jobs when the prefix fits several.
        """
        record = self.get(job_id)
        if record is not None or not job_id:
            return record
        matches = self.ids_starting_with(job_id, AMBIGUOUS_SHOWN + 1)
        if len(matches) > 1:
            shown = ", ".join(matches[:AMBIGUOUS_SHOWN]) + (", ..." if len(matches) > AMBIGUOUS_SHOWN else "")
            raise InputError(f"{job_id!r} is the start of several job ids ({shown}); give more of the id")
        return self.get(matches[0]) if matches else None

    @abc.abstractmethod
    def not_before(self, job_id: str) -> float:
        """When a re-queued job may run again (epoch seconds; 0: at once)."""

    @abc.abstractmethod
    def due(self, unchanged_since: float) -> list[JobRecord]:
        """Queued jobs that may run now (no retry delay left) whose record has not changed
        since ``unchanged_since`` (epoch seconds), oldest first."""

    @abc.abstractmethod
    def list(self, states: Iterable[str] | None = None, limit: int | None = 50, oldest_first: bool = False) -> list[JobRecord]:
        """Jobs, newest first (or oldest first), optionally only in ``states``."""

    @abc.abstractmethod
    def children(self, parent: str) -> list[JobRecord]:
        """The jobs recorded as parts of ``parent``, in submission order."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (states with none are left out)."""

    def check(self) -> None:
        """Raise if the journal cannot be read now: ConfigError when waiting would not help
        (a refused password), the backend's own error when it might (a server not up yet)."""
        self.counts()

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job."""
        record = self.get(job_id)
        return bool(record and record.cancel_requested)

    @abc.abstractmethod
    def events(self, job_id: str | None = None) -> list[JournalEvent]:
        """State changes as (seq, job_id, job_seq, state, time, detail), oldest first."""

    def runs(self, job_id: str) -> int:
        """How many times the job has been started (its "running" events)."""
        return sum(1 for event in self.events(job_id) if event[3] == "running")

    @abc.abstractmethod
    def changes_position(self) -> str:
        """The end of the log of changed jobs: pass it to :meth:`changes` to follow from now on."""

    @abc.abstractmethod
    def changes(self, after: str, block_ms: int = 1000) -> tuple[list[str], str]:
        """The ids of jobs changed (by any process) after position ``after``, waiting up to
        ``block_ms`` for one, and the position to pass next time."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the connection."""
