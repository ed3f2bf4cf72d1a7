"""Volume predictions split among workers, reported to the user as one job.

A volume or box prediction spanning more than ``[service.queue] part_sections``
sections is recorded as submitted (the *parent*, what the user follows) and run as
*parts* of that many sections each, queued separately so that every worker of a cluster
can take some (:func:`split_prediction`; each part is the same prediction restricted
to consecutive sections, and the parts together write exactly the tiles the whole job
would). The parent is held by the pseudo-worker :data:`SPLIT_WORKER` while its
parts run, is never queued itself, and its state is settled from its parts: progress
the mean of theirs, done when all are done (outputs: the union), failed when any part
failed for good, cancelled when cancelled. Part ids derive from the parent's, so a
re-submission or a restart in the middle of splitting adds each part exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from membraind_client.progress import Progress, estimate_eta

from membraind.jobs.specs import PredictSpec
from membraind.predict.request import BoxRegion, WholeVolume
from membraind.service.job import Job, JobRecord
from membraind.service.journal.base import Journal
from membraind.service.queues import JobQueues
from membraind.volumes.box import Box

__all__ = ["SplitJobs", "SPLIT_WORKER", "part_id", "part_ranges", "split_prediction"]

log = logging.getLogger(__name__)

SPLIT_WORKER = "(split among workers)"
SPLIT_LEASE = 10 * 365 * 86400.0  # the parent's hold never runs out: no worker runs it
SETTLE_INTERVAL = 1.0  # seconds between settling a parent on its parts' progress (state changes: at once)


def part_ranges(z0: int, z1: int, sections: int) -> list[tuple[int, int]]:
    """``[z0, z1)`` cut into consecutive half-open parts of at most ``sections`` sections."""
    return [(start, min(z1, start + sections)) for start in range(z0, z1, sections)]


def split_prediction(spec: object, sections: int) -> list[PredictSpec] | None:
    """The parts of ``spec`` when it is worth splitting: a prediction of a whole volume or
    a box, read from files (not from VAST, which shows the result once at the end),
    spanning more than ``sections`` sections. None: run it as one job.

    Opens the volume to learn its size (metadata only); a volume that cannot be opened
    is left to the job, which reports why.
    """
    if sections <= 0 or not isinstance(spec, PredictSpec) or not isinstance(spec.volume, Path):
        return None
    if not isinstance(spec.target, (BoxRegion, WholeVolume)):
        return None
    from membraind.errors import MembraindError
    from membraind.volumes.open_volume import open_volume

    try:
        volume = open_volume(spec.volume, spec.voxel_size_nm)
    except (MembraindError, OSError, ValueError):
        return None
    try:
        whole = Box.from_shape(volume.shape)
    finally:
        volume.close()
    box = spec.target.box if isinstance(spec.target, BoxRegion) else whole
    z0, z1 = max(box.z0, 0), min(box.z1, whole.z1)  # parts beyond the volume would have nothing to predict
    if z1 - z0 <= sections:
        return None
    return [
        spec.model_copy(update={"target": BoxRegion(box=box.model_copy(update={"z0": start, "z1": end}))})
        for start, end in part_ranges(z0, z1, sections)
    ]


def part_id(parent: str, index: int) -> str:
    """The id of part ``index`` of job ``parent`` (within the 128 characters a job id may have)."""
    base = parent if len(parent) <= 110 else hashlib.sha1(parent.encode()).hexdigest()[:24]
    return f"{base}.part{index:04d}"


class SplitJobs:
    """Splits jobs into parts of ``sections`` sections and settles parents from their parts."""

    def __init__(self, journal: Journal, queues: JobQueues, sections: int,
                 announce: Callable[[JobRecord], None] = lambda record: None) -> None:  # fmt: skip
        """``announce(parent)`` is called with every parent record a settling changed."""
        self.journal, self.queues, self.sections, self.announce = journal, queues, sections, announce
        self._settled: dict[str, float] = {}
        # A part's thread (or the follower's) and the health loop (settle_all) both settle: one
        # at a time, announcing inside, so an older reading of the parts is never written or
        # announced after a newer one.
        self._settling = threading.Lock()

    def plan(self, job: Job) -> list[Job] | None:
        """The parts of ``job``, or None when it runs as one job."""
        specs = split_prediction(job.spec, self.sections)
        if specs is None:
            return None
        return [
            Job(id=part_id(job.id, index), spec=spec, priority=job.priority, source=job.source, client=job.client,
                parent=job.id)  # fmt: skip
            for index, spec in enumerate(specs)
        ]

    def start(self, parent: JobRecord, parts: list[Job]) -> None:
        """Hold the just-recorded ``parent`` for its parts and queue them."""
        if self.journal.claim(parent.id, SPLIT_WORKER, SPLIT_LEASE) is None:
            return  # cancelled already
        self.journal.progress(parent.id, Progress(
            phase="splitting", fraction=0.0, current=0, total=len(parts), unit="part",
            message=f"split into {len(parts)} jobs of up to {self.sections} sections",
        ))  # fmt: skip
        self._add(parts)
        log.info("job %s split into %d jobs of up to %d sections", parent.id, len(parts), self.sections)

    def _add(self, parts: list[Job]) -> None:
        for part in parts:
            record, created = self.journal.add(part)
            if created:
                self.queues.enqueue_job(record)

    @staticmethod
    def is_parent(record: JobRecord | None) -> bool:
        """Whether ``record`` is a split job whose parts are running."""
        return record is not None and record.state == "running" and record.worker == SPLIT_WORKER

    def resume(self) -> None:
        """Start-up: add the parts a stop in the middle of splitting left out (idempotent)."""
        for record in self.journal.list(states=("running",), limit=None):
            if self.is_parent(record):
                parts = self.plan(record.job())
                if parts:
                    self._add(parts)

    def settle(self, parent_id: str, urgent: bool = True) -> JobRecord | None:
        """Bring the parent's record up to date with its parts; returns (and announces) it when it changed.

        ``urgent`` False (a part's progress): at most once per SETTLE_INTERVAL per parent.
        """
        with self._settling:
            record = self._settle(parent_id, urgent)
            if record is not None:
                self.announce(record)
            return record

    def _settle(self, parent_id: str, urgent: bool) -> JobRecord | None:
        now = time.monotonic()
        if not urgent and now - self._settled.get(parent_id, 0.0) < SETTLE_INTERVAL:
            return None
        self._settled[parent_id] = now
        parent = self.journal.get(parent_id)
        if not self.is_parent(parent):
            self._settled.pop(parent_id, None)
            return None
        parts = self.journal.children(parent_id)
        if not parts:
            return None
        if parent.cancel_requested:
            for part in parts:
                if not part.final and not part.cancel_requested:
                    self.journal.request_cancel(part.id)
            parts = self.journal.children(parent_id)
        if all(part.final for part in parts):
            self._finish(parent, parts)
            self._settled.pop(parent_id, None)
        else:
            done = sum(part.state == "done" for part in parts)
            running = sum(part.state == "running" for part in parts)
            fraction = sum(1.0 if part.state == "done" else part.progress for part in parts) / len(parts)
            message = f"{done} of {len(parts)} parts done, {running} running"
            if (fraction, message) == (parent.progress, parent.message):
                return None  # the health loop settles every split job each turn: no write, no event, when idle
            elapsed = time.time() - parent.started if parent.started else 0.0
            self.journal.progress(parent_id, Progress(
                phase="predicting", fraction=fraction, current=done, total=len(parts), unit="part", message=message,
                eta_seconds=estimate_eta(elapsed, fraction),
            ))  # fmt: skip
        return self.journal.get(parent_id)

    def settle_all(self) -> list[JobRecord]:
        """Settle every running split job (catches parts whose change was not seen here)."""
        settled = [self.settle(record.id) for record in self.journal.list(states=("running",), limit=None)
                   if self.is_parent(record)]  # fmt: skip
        return [record for record in settled if record is not None]

    def _finish(self, parent: JobRecord, parts: list[JobRecord]) -> None:
        from membraind.jobs.execute import JobResult

        failed = [part for part in parts if part.state == "failed"]
        if failed:
            first = failed[0]
            self.journal.fail(parent.id, f"{len(failed)} of {len(parts)} parts failed; the first ({first.id}): "
                                         f"{first.error}", SPLIT_WORKER)  # fmt: skip
        elif all(part.state == "done" for part in parts):
            outputs = list(dict.fromkeys(path for part in parts for path in (part.result.outputs if part.result else [])))
            workers = {part.worker for part in parts}
            summary = f"{len(parts)} parts of up to {self.sections} sections, run by {len(workers)} worker(s)"
            self.journal.finish(parent.id, JobResult(outputs=outputs, summary=summary), SPLIT_WORKER)
        else:
            self.journal.cancelled(parent.id, f"cancelled ({sum(p.state == 'done' for p in parts)} of {len(parts)} "
                                              "parts had finished)", SPLIT_WORKER)  # fmt: skip
