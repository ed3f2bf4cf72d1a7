"""Painting predictions into a VAST segmentation layer around anchors, for users to correct.

Reads the predicted membrane probability (a tile store or any volume) in each anchor's
cube, turns it into segments (2D cells, or the thresholded membrane as one segment), and
writes them where the VAST layer is still unpainted (:func:`write_unpainted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from membraind_client.progress import Progress, ProgressReporter

from membraind.errors import Cancelled, InputError
from membraind.segment.instances import segment_section
from membraind.segment.settings import Segment2DSettings
from membraind.vast.client import VastClient
from membraind.vast.editable import labels_at_mip0, membrane_segments, renumber_segments, write_unpainted
from membraind.volumes.box import Box
from membraind.volumes.volume import Volume

__all__ = ["PaintReport", "paint_around_anchors"]


@dataclass
class PaintReport:
    """What was painted."""

    cubes: int = 0
    voxels: int = 0
    next_id: int = 1

    def summary(self) -> str:
        return f"painted {self.voxels} voxels in {self.cubes} cubes; next free segment id {self.next_id}"


def paint_around_anchors(
    client: VastClient,
    segmentation_layer: int,
    membrane: Volume,
    cubes: list[Box],
    *,
    mode: Literal["cells", "membrane"] = "cells",
    settings: Segment2DSettings | None = None,
    threshold: float = 0.5,
    first_id: int = 2,
    progress: ProgressReporter | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PaintReport:
    """Paint each anchor's cube (mip-0 boxes, e.g. from the ``Anchors`` target's ``boxes()``;
    clipped to the volume) of ``membrane`` (membrane high) into ``segmentation_layer``.

    The membrane is read at its first level holding data (a layer predicted at mip M, at
    M) and the segments are painted at mip 0, each mip-M pixel as its 2^M x 2^M block, so
    they land on the EM they were predicted from.

    ``mode="cells"``: 2D cells of each section, numbered from ``first_id`` on (each cube and
    section gets new ids); ``"membrane"``: membrane above ``threshold`` as segment
    ``first_id`` (mEMbrain painted id 2). ``progress`` hears of each cube painted; ``cancel``
    stops between cubes (those painted stay painted).
    """
    report = PaintReport(next_id=first_id)
    mip = membrane.first_mip
    for done, cube in enumerate(cubes):
        if cancel is not None and cancel():
            raise Cancelled(f"painting cancelled after {done} of {len(cubes)} cubes; {report.summary()}")
        if progress is not None and done:
            progress(Progress(phase="painting", fraction=done / len(cubes), current=done, total=len(cubes), unit="cube",
                              message=report.summary()))  # fmt: skip
        box = cube.at_mip(mip).intersect(membrane.bounds(mip))
        if box.empty:
            continue
        pixels = membrane.read(box)
        if pixels.dtype != np.uint8:
            raise InputError(f"{membrane.name} holds {pixels.dtype}; paint from a predicted membrane layer (8-bit)")
        probability = pixels.astype(np.float32) / 255
        if mode == "membrane":
            labels = membrane_segments(probability, threshold, first_id)
        else:
            labels = np.zeros(box.shape, np.uint16)
            for z, section in enumerate(probability):
                cells = renumber_segments(segment_section(section, settings), report.next_id)
                labels[z] = cells
                report.next_id = max(report.next_id, int(cells.max()) + 1)
        target = box.at_mip(0).intersect(membrane.bounds(0))
        report.voxels += write_unpainted(client, segmentation_layer, target, labels_at_mip0(labels, mip, target.shape))
        report.cubes += 1
    if progress is not None:
        progress(Progress(phase="painting", fraction=1.0, current=len(cubes), total=len(cubes), unit="cube",
                          message=report.summary(), milestone=True))  # fmt: skip
    return report

