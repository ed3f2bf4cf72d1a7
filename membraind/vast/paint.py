"""Painting predictions into a VAST segmentation layer around anchors, for users to correct.

Reads the predicted membrane probability (a tile store or any volume) in each anchor's
cube, turns it into segments (2D cells, or the thresholded membrane as one segment), and
writes them where the VAST layer is still unpainted (:func:`write_unpainted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from membraind.errors import InputError
from membraind.segment.instances import segment_section
from membraind.segment.settings import Segment2DSettings
from membraind.vast.client import VastClient
from membraind.vast.editable import membrane_segments, renumber_segments, write_unpainted
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
) -> PaintReport:
    """Paint each anchor's cube (mip-0 boxes, e.g. from the ``Anchors`` target's ``boxes()``;
    clipped to the volume) of ``membrane`` (mip 0, membrane high) into ``segmentation_layer``.

    ``mode="cells"``: 2D cells of each section, numbered from ``first_id`` on (each cube and
    section gets new ids); ``"membrane"``: membrane above ``threshold`` as segment
    ``first_id`` (mEMbrain painted id 2).
    """
    report = PaintReport(next_id=first_id)
    bounds = membrane.bounds(0)
    for box in cubes:
        box = box.intersect(bounds)
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
        report.voxels += write_unpainted(client, segmentation_layer, box, labels)
        report.cubes += 1
    return report
