"""Announcing changes made by other processes: the scheduler follows the journal's log of
changed jobs (Redis: a stream; SQLite: a table), so the API's events and the request
folder's status files show the progress of jobs that workers run."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from membraind.service.job import JobRecord
from membraind.service.journal.base import Journal

__all__ = ["ChangeFollower"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


class ChangeFollower:
    """A thread calling ``notify(record)`` for every job the journal reports changed."""

    def __init__(self, journal: Journal, notify: Callable[[JobRecord | None], None]) -> None:
        self.journal, self.notify = journal, notify
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = "0-0"

    def start(self) -> None:
        """Follow from the stream's current end."""
        self._position = self.journal.changes_position()
        self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="journal-follower", daemon=True)
        self._thread.start()

    def healthy(self) -> bool:
        """Whether the thread runs (a dead one is restarted)."""
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            log.error("the journal follower stopped; restarting it")
            self._spawn()
            return False
        return True

    def stop(self) -> None:
        """Stop following (within about a second)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                ids, self._position = self.journal.changes(self._position, block_ms=1000)
                for job_id in ids:
                    self.notify(self.journal.get(job_id))
                failing = False
            except Exception as exc:  # Redis away for a moment: follow again when it is back
                if not failing:
                    log.warning("cannot follow the journal's changes (%s: %s); retrying", type(exc).__name__, exc)
                failing = True
                self._stop.wait(RETRY_SECONDS)
