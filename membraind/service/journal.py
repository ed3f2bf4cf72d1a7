"""The job journal: membraind's record of truth about jobs (design decision 1).

Huey forgets a task the moment a worker takes it, so a job running when the daemon is
killed would be lost. The journal is a separate SQLite file (WAL; the status and cancel
commands read and write it from other processes) holding every job's state::

    queued -> running -> done | failed | cancelled
       ^         |
       +---------+  retry after a crash, or re-queued at a graceful stop / restart

Every state change is also appended to ``events`` (per-job sequence numbers), which is
how "each job completed exactly once" can be checked and what progress feeds will read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from membraind.jobs.execute import JobResult
from membraind.service.jobs import Job, JobRecord

__all__ = ["Journal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL,
    source TEXT NOT NULL,
    client TEXT,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, priority);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    job_seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    time REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, job_seq);
"""
_COLUMNS = (
    "id, kind, spec, priority, source, client, state, progress, message, result, error, attempts, "
    "cancel_requested, created, started, finished, updated"
)
_COLUMN_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))


class Journal:
    """The job journal in the SQLite file at ``path`` (created when missing).

    Safe to share between the daemon's threads; other processes open their own.
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a job marked done stays done after power loss
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _event(self, db: sqlite3.Connection, job_id: str, state: str, detail: str = "") -> None:
        (last,) = db.execute("SELECT COALESCE(MAX(job_seq), 0) FROM events WHERE job_id = ?", (job_id,)).fetchone()
        db.execute(
            "INSERT INTO events (job_id, job_seq, state, time, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, last + 1, state, time.time(), detail),
        )

    # -- writing ------------------------------------------------------------------
    def add(self, job: Job) -> tuple[JobRecord, bool]:
        """Record ``job`` as queued; returns (record, created). A known id is not added again."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO jobs (id, kind, spec, priority, source, client, state, message, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, 'queued', 'waiting in the queue', ?, ?)",
                (job.id, job.spec.kind, job.spec.model_dump_json(), job.priority, job.source, job.client, now, now),
            )
            created = cursor.rowcount == 1
            if created:
                self._event(db, job.id, "queued")
        return self.get(job.id), created

    def claim(self, job_id: str) -> JobRecord | None:
        """Mark a queued job running (one more attempt); None if it is not queued any more."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, updated = ?, "
                "progress = 0, message = 'started' WHERE id = ? AND state = 'queued' AND cancel_requested = 0",
                (now, now, job_id),
            )
            if cursor.rowcount != 1:
                return None
            self._event(db, job_id, "running")
        return self.get(job_id)

    def progress(self, job_id: str, fraction: float, message: str) -> None:
        """Record a running job's progress."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, message = ?, updated = ? WHERE id = ? AND state = 'running'",
                (max(0.0, min(1.0, fraction)), message[:500], time.time(), job_id),
            )

    def _end(self, job_id: str, state: str, *, result: JobResult | None = None, error: str | None = None, message: str) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, message = ?, finished = ?, updated = ?, "
                "progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END WHERE id = ?",
                (state, result.model_dump_json() if result else None, error, message, now, now, state, job_id),
            )
            self._event(db, job_id, state, error or message)

    def finish(self, job_id: str, result: JobResult) -> None:
        """Mark a job done with its result."""
        self._end(job_id, "done", result=result, message=result.summary or "done")

    def fail(self, job_id: str, error: str) -> None:
        """Mark a job failed with the reason, worded for the user."""
        self._end(job_id, "failed", error=error, message="failed")

    def cancelled(self, job_id: str, message: str = "cancelled") -> None:
        """Mark a job cancelled."""
        self._end(job_id, "cancelled", message=message)

    def requeue(self, job_id: str, message: str, *, delay: float = 0.0, refund_attempt: bool = False) -> None:
        """Put a job back in the queue (a retry after ``delay`` s, or a stop that interrupted it).

        ``refund_attempt``: the run was stopped on purpose, not failed, so it does not count.
        """
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', message = ?, not_before = ?, updated = ?, "
                "attempts = attempts - ? WHERE id = ? AND state = 'running'",
                (message, now + delay, now, 1 if refund_attempt else 0, job_id),
            )
            self._event(db, job_id, "queued", message)

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job: a queued one at once, a running one at its next safe point."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                now = time.time()
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', message = 'cancelled before it started', "
                    "cancel_requested = 1, finished = ?, updated = ? WHERE id = ?",
                    (now, now, job_id),
                )
                self._event(db, job_id, "cancelled", "cancelled before it started")
            elif row[0] == "running":
                db.execute(
                    "UPDATE jobs SET cancel_requested = 1, message = 'cancelling', updated = ? WHERE id = ?",
                    (time.time(), job_id),
                )
        return self.get(job_id)

    def recover(self) -> list[JobRecord]:
        """At start-up: jobs left running were interrupted; put them back. Returns every queued job."""
        with self._write() as db:
            interrupted = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            for job_id in interrupted:
                db.execute(
                    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, "
                    "message = 'interrupted: the daemon stopped while it ran', updated = ? WHERE id = ?",
                    (time.time(), job_id),
                )
                (state,) = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                self._event(db, job_id, state, "interrupted: the daemon stopped while it ran")
        return self.list(states=("queued",), limit=None, oldest_first=True)

    # -- reading ------------------------------------------------------------------
    @staticmethod
    def _record(row: tuple) -> JobRecord:
        values = dict(zip(_COLUMN_NAMES, row))
        values["spec"] = json.loads(values["spec"])
        values["result"] = JobResult.model_validate_json(values["result"]) if values["result"] else None
        values["cancel_requested"] = bool(values["cancel_requested"])
        return JobRecord(**values)

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._record(row) if row else None

    def not_before(self, job_id: str) -> float:
        """When a re-queued job may run again (epoch seconds; 0: at once)."""
        with self._lock:
            row = self._db.execute("SELECT not_before FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else 0.0

    def due(self, unchanged_since: float) -> list[JobRecord]:
        """Queued jobs that may run now (no retry delay left) and whose row has not changed
        since ``unchanged_since`` (epoch seconds), oldest first."""
        query = (f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' AND not_before <= ? AND updated <= ? "
                 "ORDER BY created, rowid")  # fmt: skip
        with self._lock:
            rows = self._db.execute(query, (time.time(), unchanged_since)).fetchall()
        return [self._record(r) for r in rows]

    def list(self, states: tuple[str, ...] | None = None, limit: int | None = 50, oldest_first: bool = False) -> list[JobRecord]:
        """Jobs, newest first (or oldest first), optionally only in ``states``."""
        query = f"SELECT {_COLUMNS} FROM jobs"
        args: list = []
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args += list(states)
        query += f" ORDER BY created {'ASC' if oldest_first else 'DESC'}, rowid {'ASC' if oldest_first else 'DESC'}"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state."""
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job."""
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def events(self, job_id: str | None = None) -> list[tuple]:
        """State changes as (seq, job_id, job_seq, state, time, detail), oldest first."""
        query = "SELECT seq, job_id, job_seq, state, time, detail FROM events"
        args: tuple = ()
        if job_id is not None:
            query, args = query + " WHERE job_id = ?", (job_id,)
        with self._lock:
            return self._db.execute(query + " ORDER BY seq", args).fetchall()
