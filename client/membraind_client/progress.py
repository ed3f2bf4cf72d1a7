"""How far a job has come, as data: one definition for the daemon and its clients.

The trainer, the prediction pipeline and the segmentation report a :class:`Progress`
to a :data:`ProgressReporter`; the engine process's pipe, the journal, the ZeroMQ
replies and events carry it; the command lines draw it. Front ends read the fields and
never parse ``message``, which is for people. The time left is estimated in one place,
:class:`EtaClock`, so that every front end shows the same figure.
"""

from __future__ import annotations

import time
from typing import Callable

from pydantic import BaseModel, Field

__all__ = ["Progress", "ProgressReporter", "EtaClock", "estimate_eta", "no_progress", "format_seconds"]


class Progress(BaseModel):
    """One report of a job's progress."""

    phase: str = Field(description="what the job does now: training, validating, resuming, predicting, segmenting, "
                                   "exporting, splitting ...")  # fmt: skip
    fraction: float = Field(description="share of the job done, 0..1")
    current: int | None = Field(None, description="units done so far (with total and unit)")
    total: int | None = Field(None, description="units in all")
    unit: str | None = Field(None, description="what current and total count: step, tile, section, part")
    message: str = Field("", description="the same for people, one line")
    milestone: bool = Field(False, description="a result worth a line of its own in a log (an epoch's validation "
                                               "score, a finished section), not only a step forward")  # fmt: skip
    eta_seconds: float | None = Field(None, description="estimated seconds left (null: not known yet)")

    @property
    def counts(self) -> str:
        """``unit current/total`` (e.g. ``tile 3/20``), or '' when the report counts nothing."""
        if self.current is None or self.total is None:
            return ""
        return f"{self.unit or ''} {self.current}/{self.total}".strip()

    @property
    def eta(self) -> str:
        """The time left as ``m:ss`` or ``h:mm:ss``, or '' when not known."""
        return "" if self.eta_seconds is None else format_seconds(self.eta_seconds)


ProgressReporter = Callable[[Progress], None]


def no_progress(progress: Progress) -> None:
    """A reporter that drops every report."""


def format_seconds(seconds: float) -> str:
    """``m:ss`` below an hour, else ``h:mm:ss``."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def estimate_eta(elapsed: float, fraction: float, start_fraction: float = 0.0) -> float | None:
    """Seconds left for a job that went from ``start_fraction`` to ``fraction`` in ``elapsed``
    seconds at a steady rate; None while it has not moved."""
    gained = fraction - start_fraction
    if gained <= 0 or elapsed <= 0:
        return None
    return round(max(0.0, elapsed * (1.0 - fraction) / gained), 1)


class EtaClock:
    """A reporter that stamps ``eta_seconds`` on each report and passes it on to ``report``.

    The clock starts when this is made (so loading counts) and takes the first report's
    fraction as the starting point (a resumed job does not look faster than it is).
    """

    def __init__(self, report: ProgressReporter, clock: Callable[[], float] = time.monotonic) -> None:
        self.report, self.clock = report, clock
        self.started = clock()
        self.start_fraction: float | None = None

    def __call__(self, progress: Progress) -> None:
        if self.start_fraction is None:
            self.start_fraction = progress.fraction
        eta = estimate_eta(self.clock() - self.started, progress.fraction, self.start_fraction)
        self.report(progress.model_copy(update={"eta_seconds": eta}))
