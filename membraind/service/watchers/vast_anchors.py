"""VAST anchors: poll annotation layers for new skeleton nodes and predict around them.

Each poll that finds new or moved nodes queues one anchors job for just those nodes;
the job loads the result layer into VAST the first time and refreshes it afterwards.
A VAST that is closed or unreachable is retried at the next poll, quietly after the
first warning. Nodes count as seen only once their job is submitted: a refused submit
(say, a locked journal) is tried again at the next poll, logged once per reason.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from membraind.errors import MembraindError
from membraind.jobs.specs import PredictSpec
from membraind.predict.request import Anchors, VastSource
from membraind.service.job import Job
from membraind.service.priority import Priority
from membraind.service.settings import VastAnchorWatch

__all__ = ["VastAnchorWatcher"]

log = logging.getLogger(__name__)


class VastAnchorWatcher:
    """Polls one VAST's anchor layers every ``watch.poll_seconds`` and submits anchor jobs."""

    def __init__(self, watch: VastAnchorWatch, submit) -> None:
        self.watch, self.submit = watch, submit
        self._poller = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._refusals: set[str] = set()  # reasons already logged since the last accepted job
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
        if self._poller is not None:
            self._poller.client.close()

    def healthy(self) -> bool:
        """Whether the polling thread runs (an unreachable VAST is not a fault of the daemon)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_loop = time.monotonic()
            try:
                self.poll_once()
                self._warned = False
            except Exception as exc:
                if not self._warned:
                    log.warning("VAST at %s:%d: %s; trying again every %.0f s", self.watch.host, self.watch.port,
                                exc, self.watch.poll_seconds)  # fmt: skip
                self._warned = True
            self._stop.wait(self.watch.poll_seconds)

    def poll_once(self) -> Job | None:
        """Look for new nodes once; returns the job submitted for them, if any."""
        from membraind.vast.anchors import AnchorPoller
        from membraind.vast.client import VastClient

        if self._poller is None:
            self._poller = AnchorPoller(VastClient(self.watch.host, self.watch.port), list(self.watch.anchor_layers))
        anchors, nodes = self._poller.peek()
        if not anchors:
            self._poller.commit(nodes)  # only deletions: forget them
            return None
        w = self.watch
        try:
            spec = PredictSpec(
                volume=VastSource(host=w.host, port=w.port, layer=w.em_layer), bundles=w.bundles, out=w.out,
                target=Anchors(points=anchors, cube_xy=w.cube_xy, cube_z=w.cube_z),
            )  # fmt: skip
            key = hashlib.sha1(spec.model_dump_json().encode()).hexdigest()[:20]
            job = Job(id=f"vast-{key}", spec=spec, priority=Priority.INTERACTIVE, source="vast", client=f"{w.host}:{w.port}")
            self.submit(job)
        except Exception as exc:  # the nodes stay unseen: the next poll offers them again
            reason = str(exc) if isinstance(exc, MembraindError) else f"{type(exc).__name__}: {exc}"
            if reason not in self._refusals:
                self._refusals.add(reason)
                log.warning("VAST %s:%d: the job for %d new anchor(s) was refused (%s); trying again at every poll",
                            w.host, w.port, len(anchors), reason)  # fmt: skip
            return None
        self._poller.commit(nodes)
        self._refusals.clear()
        log.info("VAST %s:%d: %d new anchor(s) queued as job %s", w.host, w.port, len(anchors), job.id)
        return job
