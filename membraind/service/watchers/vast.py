"""One VAST, watched: its anchor layers (:mod:`.vast_anchors`) and, with ``learn``, its
painted ground truth (:mod:`.vast_learning`), polled in one thread over one connection.

A VAST that is closed or unreachable is retried at the next poll, quietly after the
first warning; a problem with the painting (say, a segment named as no class) is logged
once and does not stop the anchors.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from membraind.errors import MembraindError
from membraind.service.job import Job, JobRecord
from membraind.service.settings import VastWatch
from membraind.service.watchers.vast_anchors import AnchorJobs, Submit
from membraind.service.watchers.vast_learning import LearningJobs
from membraind.vast.client import VastClient, VastConnectionError

__all__ = ["VastWatcher"]

log = logging.getLogger(__name__)


class VastWatcher:
    """Polls one VAST every ``watch.poll_seconds``: anchor jobs, and learning jobs with ``learn``.

    ``jobs(prefix)`` gives the journal's records whose id starts with ``prefix``.
    """

    def __init__(self, watch: VastWatch, submit: Submit, jobs: Callable[[str], list[JobRecord]], models_dir: Path) -> None:
        self.watch = watch
        self.client = VastClient(watch.host, watch.port)
        self.anchors = AnchorJobs(watch, submit, models_dir)
        self.learning = LearningJobs(watch, submit, jobs, models_dir) if watch.learn else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self.last_loop = time.monotonic()

    def start(self) -> None:
        """Start polling in a thread."""
        self._thread = threading.Thread(target=self._run, name=f"vast-{self.watch.host}:{self.watch.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.client.close()

    def healthy(self) -> bool:
        """Whether the polling thread runs (an unreachable VAST is not a fault of the daemon)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_loop = time.monotonic()
            self.poll_once()
            self._stop.wait(self.watch.poll_seconds)

    def poll_once(self) -> list[Job]:
        """Look at VAST once; returns the jobs queued (anchors, learning)."""
        jobs = []
        for part, what in ((self.anchors, "anchors"), (self.learning, "painted ground truth")):
            if part is None:
                continue
            try:
                job = part.poll(self.client)
            except Exception as exc:
                self._warn(what, exc)
                if isinstance(exc, (VastConnectionError, OSError)):
                    self.client.close()
                    break  # VAST is away: the next poll tries again
                continue
            self._warned.discard(what)
            if job is not None:
                jobs.append(job)
        return jobs

    def _warn(self, what: str, exc: Exception) -> None:
        if what in self._warned:
            return
        self._warned.add(what)
        reason = str(exc) if isinstance(exc, MembraindError) else f"{type(exc).__name__}: {exc}"
        log.warning("VAST at %s:%d (%s): %s; trying again every %.0f s", self.watch.host, self.watch.port, what,
                    reason, self.watch.poll_seconds)  # fmt: skip
