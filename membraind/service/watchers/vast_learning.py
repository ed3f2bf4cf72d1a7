"""Learning jobs: what users paint in VAST becomes the next version of a lab model.

Every poll surveys the ground-truth layer (:func:`~membraind.vast.painted.survey_painted`).
When the painted voxels have grown by ``learn_voxels`` beyond what the newest version
learned from, and the painting has not changed for ``quiet_seconds``, one learning job
is queued: a fine-tune of the latest version (training from scratch for the first), whose
run becomes the next version. Its job id is made from the painting's fingerprint, so the
same painting never makes two versions, across restarts too; while a learning job of the
model is queued or running, no other is queued.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from membraind.errors import InputError, MembraindError
from membraind.jobs.specs import FinetuneSpec, TrainSpec
from membraind.nn.versions import latest_version, versions
from membraind.service.job import Job, JobRecord
from membraind.service.priority import Priority
from membraind.service.settings import VastWatch
from membraind.service.watchers.vast_anchors import Submit
from membraind.vast.client import VastClient
from membraind.vast.painted import PaintedSurvey, survey_painted

__all__ = ["LearningJobs", "LEARN_JOB_PREFIX"]

log = logging.getLogger(__name__)

LEARN_JOB_PREFIX = "vast-learn-"  # + model name + "-" + the painting's fingerprint


class LearningJobs:
    """Queues the next version of ``watch.model`` when enough new painting has come to rest.

    ``jobs(prefix)`` returns the journal's records of jobs whose id starts with ``prefix``
    (to see whether a learning job is still under way); ``clock`` is monotonic seconds.
    """

    def __init__(
        self, watch: VastWatch, submit: Submit, jobs: Callable[[str], list[JobRecord]], models_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        assert watch.model is not None  # VastWatch requires it with learn
        self.watch, self.submit, self.jobs, self.models_dir, self.clock = watch, submit, jobs, models_dir, clock
        self.source = watch.ground_truth()
        self.survey: PaintedSurvey | None = None  # the last one taken
        self._changed_at = 0.0
        self._asked: str | None = None  # the fingerprint a job was last submitted for

    @property
    def prefix(self) -> str:
        """The job ids of this model's learning jobs start with this."""
        return f"{LEARN_JOB_PREFIX}{self.watch.model}-"

    def poll(self, client: VastClient) -> Job | None:
        """Survey the painting once; returns the learning job queued now, if any."""
        survey = survey_painted(client, self.source)
        if self.survey is None or survey.fingerprint != self.survey.fingerprint:
            self._changed_at = self.clock()  # somebody painted (or the daemon just started): wait for quiet
        self.survey = survey
        if self.clock() - self._changed_at < self.watch.quiet_seconds or survey.fingerprint == self._asked:
            return None
        learned = self.learned_voxels()
        if survey.voxels - learned < self.watch.learn_voxels or self.under_way():
            return None
        job = Job(
            id=f"{self.prefix}{survey.fingerprint[:16]}", spec=self._spec(), priority=Priority.INTERACTIVE,
            source="vast", client=f"{self.watch.host}:{self.watch.port}",
        )  # fmt: skip
        try:
            _, created = self.submit(job)
        except MembraindError as exc:
            raise InputError(f"the learning job for {self.watch.model} was refused: {exc}") from None
        self._asked = survey.fingerprint
        if created:
            log.info("VAST %s:%d: %d voxels painted (%d more than %s last learned from) and quiet for %.0f s: "
                     "learning the next version as job %s", self.watch.host, self.watch.port, survey.voxels,
                     survey.voxels - learned, self.watch.model, self.watch.quiet_seconds, job.id)  # fmt: skip
            return job
        return None

    def learned_voxels(self) -> int:
        """The painted voxels the newest version that learned from VAST saw (0: none did)."""
        for version in reversed(versions(self.models_dir, self.watch.model)):
            record = version.record().get("ground_truth")
            if isinstance(record, dict) and isinstance(record.get("painted_voxels"), int):
                return record["painted_voxels"]
        return 0

    def under_way(self) -> bool:
        """Whether a learning job of this model is queued or running."""
        return any(not record.final for record in self.jobs(self.prefix))

    def _spec(self) -> TrainSpec:
        w = self.watch
        try:
            latest_version(self.models_dir, w.model)
        except InputError:  # no version yet: the first is trained afresh
            return TrainSpec(model=w.model, vast=self.source, max_minutes=w.learn_minutes)
        return FinetuneSpec(model=w.model, vast=self.source, mode=w.learn_mode, max_minutes=w.learn_minutes)
