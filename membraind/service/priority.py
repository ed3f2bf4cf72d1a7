"""Which queue a job waits on and how urgent it is: what the scheduler decides, not the job.

Higher priorities run first (docs/design-notes.md, "One GPU job at a time, by priority"). A person submitting a job may give
its own priority; otherwise :func:`default_priority` sets it from the kind and target.
"""

from __future__ import annotations

from membraind.jobs.specs import PredictSpec, TrainSpec
from membraind.predict.request import Anchors, SingleImage

__all__ = ["Priority", "default_priority", "GPU_KINDS", "queue_of"]


class Priority:
    """GPU queue priorities, higher first (docs/design-notes.md, "One GPU job at a time, by priority")."""

    INTERACTIVE = 30  # anchors and single images a person is waiting for
    SCOPE = 20  # tiles arriving from the microscope
    VOLUME = 10  # boxes and whole volumes
    TRAINING = 0
    LIGHT = 0  # CPU queue: segment2d, export-onnx run in submission order


def default_priority(spec: object) -> int:
    """The priority of a spec submitted by a person (the scope watcher sets SCOPE itself)."""
    if isinstance(spec, PredictSpec):
        interactive = isinstance(spec.target, (Anchors, SingleImage))
        return Priority.INTERACTIVE if interactive else Priority.VOLUME
    if isinstance(spec, TrainSpec):
        return Priority.TRAINING
    return Priority.LIGHT


GPU_KINDS = ("predict", "train", "finetune")


def queue_of(kind: str) -> str:
    """The queue a job kind runs on: "gpu" (prediction and training, one at a time) or "cpu"."""
    return "gpu" if kind in GPU_KINDS else "cpu"
