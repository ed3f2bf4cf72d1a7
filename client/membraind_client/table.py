"""The job list as people read it, the same in ``membraind status`` and ``membraind-client list``."""

from __future__ import annotations

from typing import Sequence

from membraind_client.messages import JobInfo

__all__ = ["STATE_ORDER", "age", "counts_line", "job_lines"]

STATE_ORDER = ("running", "queued", "done", "failed", "cancelled")


def age(seconds: float) -> str:
    """A duration in its largest whole unit: ``40s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def counts_line(counts: dict[str, int]) -> str:
    """``jobs: 1 running, 4 queued, ...`` in a fixed order of states."""
    return "jobs: " + ", ".join(f"{counts.get(state, 0)} {state}" for state in STATE_ORDER)


def job_lines(jobs: Sequence[JobInfo], now: float, outputs: bool = False) -> list[str]:
    """A heading and one line per job (ids whole: any unique start of one is accepted back),
    with the output paths of finished jobs below them when ``outputs``."""
    width = max([len("JOB"), *(len(job.id) for job in jobs)])
    lines = [f"{'JOB':{width}s} {'KIND':11s} {'STATE':9s} {'DONE':>6s} {'AGE':>5s}  MESSAGE"]
    for job in jobs:
        detail = job.error if job.state == "failed" else job.message
        if job.state == "running" and job.worker:
            detail = f"[{job.worker}] {detail}"
        lines.append(f"{job.id:{width}s} {job.kind:11s} {job.state:9s} {job.progress * 100:5.1f}% "
                     f"{age(now - job.created):>5s}  {detail}")  # fmt: skip
        if outputs and job.state == "done" and job.result:
            lines += [f"{'':{width}s}   output: {path}" for path in job.result.outputs]
    return lines
