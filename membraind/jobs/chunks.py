"""Splitting a volume prediction into jobs of a few sections each, so that several
workers share it (scale-out). Each part is the same prediction restricted to a slab of
sections; the parts together write exactly the tiles the whole job would."""

from __future__ import annotations

from pathlib import Path

from membraind.jobs.specs import PredictSpec
from membraind.predict.request import BoxRegion, WholeVolume
from membraind.volumes.box import Box

__all__ = ["z_slabs", "split_prediction"]


def z_slabs(z0: int, z1: int, sections: int) -> list[tuple[int, int]]:
    """``[z0, z1)`` cut into consecutive half-open slabs of at most ``sections`` sections."""
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
        for start, end in z_slabs(z0, z1, sections)
    ]
