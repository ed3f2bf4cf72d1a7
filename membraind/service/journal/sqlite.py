"""The journal in one SQLite file (WAL): the embedded default, for one host.

The daemon's threads share one connection; other processes on the same host (``status``,
``cancel``, local workers) open their own. See :mod:`membraind.service.journal.base`
for the state machine and leases.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from membraind_client.progress import Progress

from membraind.jobs.execute import JobResult
from membraind.service.job import Job, JobRecord
from membraind.service.journal.base import (
    COLUMNS, Journal, expired_message, record_from_values, released_message, stored_progress,
)  # fmt: skip

__all__ = ["SqliteJournal"]

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
-- Which job changed, in commit order: serve follows it to announce what other processes
-- (local workers) did. Every change sets `updated`; a lease renewal does not. The log
-- keeps its last 10000 rows: ample for a follower that looks every 0.1 s.
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS jobs_added AFTER INSERT ON jobs BEGIN
    INSERT INTO changes (job_id) VALUES (NEW.id);
    DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - 10000;
END;
CREATE TRIGGER IF NOT EXISTS jobs_changed AFTER UPDATE OF updated ON jobs BEGIN
    INSERT INTO changes (job_id) VALUES (NEW.id);
    DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - 10000;
END;
"""
CHANGES_POLL = 0.1  # seconds between looks at the change log while following
# Added after the first release: journals written before get them at open.
_LATER_COLUMNS = {"worker": "TEXT", "lease_until": "REAL NOT NULL DEFAULT 0", "parent": "TEXT", "progress_detail": "TEXT"}
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"
# A running job goes back to the queue, or ends cancelled when a cancel was asked for.
_BACK_TO_QUEUE = (
    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, message = ?, "
    "progress_detail = NULL, lease_until = 0, updated = ?, finished = CASE WHEN cancel_requested THEN ? END "
    "WHERE id = ? AND state = 'running'"
)


class SqliteJournal(Journal):
    """The job journal in the SQLite file at ``path`` (created when missing)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a job marked done stays done after power loss
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _LATER_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent) WHERE parent IS NOT NULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- following ---------------------------------------------------------------------
    def changes_position(self) -> str:
        """The change log's current end: pass it to :meth:`changes` to follow from now on."""
        with self._lock:
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return str(last)

    def changes(self, after: str, block_ms: int = 1000) -> tuple[list[str], str]:
        """The ids of jobs changed after position ``after`` (looking every CHANGES_POLL s for
        up to ``block_ms``), and the new position to pass next time."""
        deadline = time.monotonic() + block_ms / 1000
        while True:
            with self._lock:
                rows = self._db.execute("SELECT seq, job_id FROM changes WHERE seq > ? ORDER BY seq LIMIT 1000",
                                        (int(after),)).fetchall()  # fmt: skip
            if rows:
                break
            if time.monotonic() >= deadline:
                return [], after
            time.sleep(CHANGES_POLL)
        return list(dict.fromkeys(job_id for _, job_id in rows)), str(rows[-1][0])

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
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO jobs (id, kind, spec, priority, source, client, parent, state, message, created, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', 'waiting in the queue', ?, ?)",
                (job.id, job.spec.kind, job.spec.model_dump_json(), job.priority, job.source, job.client, job.parent,
                 now, now),  # fmt: skip
            )
            created = cursor.rowcount == 1
            if created:
                self._event(db, job.id, "queued")
        return self.get(job.id), created

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> JobRecord | None:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?, updated = ?, progress = 0, "
                "message = 'started', progress_detail = NULL, worker = ?, lease_until = ? "
                "WHERE id = ? AND state = 'queued' AND cancel_requested = 0",
                (now, now, worker, now + lease_seconds, job_id),
            )
            if cursor.rowcount != 1:
                return None
            self._event(db, job_id, "running", f"on {worker}")
        return self.get(job_id)

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND state = 'running' AND worker = ?",
                (time.time() + lease_seconds, job_id, worker),
            )
        return cursor.rowcount == 1

    def progress(self, job_id: str, progress: Progress) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, message = ?, progress_detail = ?, updated = ? "
                "WHERE id = ? AND state = 'running'",
                (*stored_progress(progress), time.time(), job_id),
            )

    def _end(self, job_id: str, worker: str, state: str, *, result: JobResult | None, error: str | None,
             message: str) -> bool:  # fmt: skip
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, message = ?, progress_detail = NULL, finished = ?, "
                "updated = ?, lease_until = 0, "
                "progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END "
                "WHERE id = ? AND state = 'running' AND worker = ?",
                (state, result.model_dump_json() if result else None, error, message, now, now, state, job_id, worker),
            )
            if cursor.rowcount != 1:
                return False
            self._event(db, job_id, state, error or message)
        return True

    def requeue(self, job_id: str, message: str, worker: str, *, delay: float = 0.0, refund_attempt: bool = False) -> bool:
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'queued', message = ?, progress_detail = NULL, not_before = ?, updated = ?, "
                "lease_until = 0, "
                "attempts = attempts - ? WHERE id = ? AND state = 'running' AND worker = ?",
                (message, now + delay, now, 1 if refund_attempt else 0, job_id, worker),
            )
            if cursor.rowcount != 1:
                return False
            self._event(db, job_id, "queued", message)
        return True

    def request_cancel(self, job_id: str) -> JobRecord | None:
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                now = time.time()
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', message = 'cancelled before it started', progress_detail = NULL, "
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

    def _take_back(self, where: str, args: tuple, why) -> list[JobRecord]:
        """Send running jobs matching ``where`` back to the queue (or to cancelled); ``why(worker)`` says why."""
        query = f"SELECT id, worker FROM jobs WHERE state = 'running' AND {where}"
        with self._lock:  # read first: the health loop asks every few seconds and there is rarely anything
            if not self._db.execute(query, args).fetchall():
                return []
        now = time.time()
        with self._write() as db:
            rows = db.execute(query, args).fetchall()
            for job_id, worker in rows:
                message = why(worker)
                db.execute(_BACK_TO_QUEUE, (message, now, now, job_id))
                (state,) = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                self._event(db, job_id, state, message)
        records = [self.get(job_id) for job_id, _ in rows]
        return [r for r in records if r is not None and r.state == "queued"]

    def release(self, worker: str) -> list[JobRecord]:
        return self._take_back("worker = ?", (worker,), released_message)

    def expire_leases(self) -> list[JobRecord]:
        return self._take_back("lease_until < ?", (time.time(),), expired_message)

    # -- reading ------------------------------------------------------------------
    @staticmethod
    def _record(row: tuple) -> JobRecord:
        return record_from_values(dict(zip(COLUMNS, row)))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
        return self._record(row) if row else None

    def ids_starting_with(self, prefix: str, limit: int) -> list[str]:
        # a range on the primary key: every character a job id may hold sorts below DEL (0x7f)
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                    (prefix, prefix + "\x7f", limit)).fetchall()  # fmt: skip
        return [row[0] for row in rows]

    def not_before(self, job_id: str) -> float:
        with self._lock:
            row = self._db.execute("SELECT not_before FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else 0.0

    def due(self, unchanged_since: float) -> list[JobRecord]:
        query = f"{_SELECT} WHERE state = 'queued' AND not_before <= ? AND updated <= ? ORDER BY created, rowid"
        with self._lock:
            rows = self._db.execute(query, (time.time(), unchanged_since)).fetchall()
        return [self._record(r) for r in rows]

    def list(self, states: Iterable[str] | None = None, limit: int | None = 50, oldest_first: bool = False) -> list[JobRecord]:
        query, args = _SELECT, []
        states = tuple(states or ())
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

    def children(self, parent: str) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(f"{_SELECT} WHERE parent = ? ORDER BY created, rowid", (parent,)).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def events(self, job_id: str | None = None) -> list[tuple]:
        query = "SELECT seq, job_id, job_seq, state, time, detail FROM events"
        args: tuple = ()
        if job_id is not None:
            query, args = query + " WHERE job_id = ?", (job_id,)
        with self._lock:
            return self._db.execute(query + " ORDER BY seq", args).fetchall()
