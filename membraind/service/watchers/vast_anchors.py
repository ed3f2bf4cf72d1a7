"""Anchor jobs: new skeleton nodes in VAST become prediction jobs around them.

Each poll that finds new or moved nodes queues one anchors job for just those nodes;
the job loads the result layer into VAST the first time and refreshes it afterwards.
With a lab model, the jobs predict with its latest ready version, named explicitly
(``octopus-vl@v2``), and when a newer version becomes ready every node counts as new
once more: the cubes already shown are predicted again with it (tiles of the older
version are replaced, tiles already made by this version are kept) and refreshed. The
user sees the better model where they were looking.

Nodes count as seen only once their job is submitted: a refused submit (say, a locked
journal) is tried again at the next poll, logged once per reason.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

from membraind.errors import InputError, MembraindError
from membraind.jobs.specs import PredictSpec
from membraind.nn.versions import latest_version
from membraind.predict.request import Anchors, VastSource
from membraind.service.job import Job, JobRecord
from membraind.service.priority import Priority
from membraind.service.settings import VastWatch
from membraind.vast.client import VastClient

__all__ = ["AnchorJobs", "Submit"]

log = logging.getLogger(__name__)

Submit = Callable[[Job], "tuple[JobRecord, bool]"]  # (record, created), as Daemon.submit


class AnchorJobs:
    """Turns the new nodes of one VAST's anchor layers into prediction jobs."""

    def __init__(self, watch: VastWatch, submit: Submit, models_dir: Path) -> None:
        self.watch, self.submit, self.models_dir = watch, submit, models_dir
        self._poller = None
        self._version: int | None = None  # the lab model version the shown cubes were predicted with
        self._refusals: set[str] = set()  # reasons already logged since the last accepted job

    def poll(self, client: VastClient) -> Job | None:
        """Look for new nodes once; returns the job submitted for them, if any."""
        from membraind.vast.anchors import AnchorPoller

        if self._poller is None:
            self._poller = AnchorPoller(client, list(self.watch.anchor_layers))
        try:
            models = self._models()
        except InputError as exc:  # no ready version yet: the nodes wait for it, unseen
            self._refused(f"{exc}", None)
            return None
        anchors, nodes = self._poller.peek()
        if not anchors:
            self._poller.commit(nodes)  # only deletions: forget them
            return None
        w = self.watch
        try:
            spec = PredictSpec(
                volume=VastSource(host=w.host, port=w.port, layer=w.em_layer), bundles=w.bundles, models=models,
                out=w.out, target=Anchors(points=anchors, cube_xy=w.cube_xy, cube_z=w.cube_z),
            )  # fmt: skip
            key = hashlib.sha1(spec.model_dump_json().encode()).hexdigest()[:20]
            job = Job(id=f"vast-{key}", spec=spec, priority=Priority.INTERACTIVE, source="vast", client=f"{w.host}:{w.port}")
            _, created = self.submit(job)
        except Exception as exc:  # the nodes stay unseen: the next poll offers them again
            self._refused(str(exc) if isinstance(exc, MembraindError) else f"{type(exc).__name__}: {exc}", len(anchors))
            return None
        self._poller.commit(nodes)
        self._refusals.clear()
        if not created:  # the same cubes with the same version (after a restart): that job is known already
            return None
        log.info("VAST %s:%d: %d anchor(s) queued as job %s%s", w.host, w.port, len(anchors), job.id,
                 f" (predicted with {models[0]})" if models else "")  # fmt: skip
        return job

    def _models(self) -> list[str]:
        """The lab model version to predict with, pinned (``NAME@vN``; none without a model).
        A version newer than the one shown so far makes every node new again."""
        if self.watch.model is None:
            return []
        version = latest_version(self.models_dir, self.watch.model).version
        if version != self._version:
            if self._version is not None:
                log.info("VAST %s:%d: %s v%d is ready; the cubes shown so far are predicted again with it",
                         self.watch.host, self.watch.port, self.watch.model, version)  # fmt: skip
                self._poller.seen = {}
            self._version = version
        return [f"{self.watch.model}@v{version}"]

    def _refused(self, reason: str, count: int | None) -> None:
        if reason in self._refusals:
            return
        self._refusals.add(reason)
        w = self.watch
        if count is None:
            log.warning("VAST %s:%d: new anchors wait: %s", w.host, w.port, reason)
        else:
            log.warning("VAST %s:%d: the job for %d new anchor(s) was refused (%s); trying again at every poll",
                        w.host, w.port, count, reason)  # fmt: skip
