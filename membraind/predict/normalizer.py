"""Tile-invariant input normalisation at prediction time.

docs/design-notes.md, "Tile-invariant preprocessing".

A bundle's :class:`IntensityNormalization` stretches gray values with statistics of a
whole section (or of its training set), never of a tile. Here the section statistics
are computed once per section from the whole section, read at the prediction mip or,
for very large sections, at the first coarser mip that has at most ``STATS_PIXELS``
pixels, so memory stays bounded. CLAHE, which adapts to local contrast, is applied to
the whole section and the tile cut from the result.
"""

from __future__ import annotations

from threading import Lock

import numpy as np

from membraind.groundtruth.normalization import IntensityNormalization
from membraind.predict.tiling import crop_with_context
from membraind.volumes.box import Box
from membraind.volumes.volume import Volume

__all__ = ["SectionNormalizer", "STATS_PIXELS"]

STATS_PIXELS = 2048 * 2048


class SectionNormalizer:
    """Normalises tiles of one volume at one mip the way a bundle's training did."""

    def __init__(self, volume: Volume, mip: int, normalization: IntensityNormalization) -> None:
        self.volume, self.mip, self.normalization = volume, mip, normalization
        self.stats_mip = mip
        while self.stats_mip + 1 < volume.mips and _pixels(volume.shape_at(self.stats_mip)) > STATS_PIXELS:
            self.stats_mip += 1
        self._ranges: dict[int, tuple[float, float]] = {}
        self._clahe_section: tuple[int, np.ndarray] | None = None
        self._lock = Lock()

    def value_range(self, z: int) -> tuple[float, float]:
        """The (low, high) gray values that stretch section ``z`` (computed once)."""
        with self._lock:
            if z not in self._ranges:
                if self.normalization.method == "percentile" and self.normalization.scope == "section":
                    section = self.volume.read(self.volume.bounds(self.stats_mip).section(z))[0]
                else:  # dataset statistics or no stretch: nothing to read
                    section = np.zeros((1, 1), self.volume.dtype)
                self._ranges[z] = self.normalization.section_range(section)
                if len(self._ranges) > 64:  # sections are visited in order; keep memory flat
                    self._ranges.pop(next(iter(self._ranges)))
            return self._ranges[z]

    def tile(self, raw: np.ndarray, core: Box, context: int) -> np.ndarray:
        """Normalise ``raw``, the 2D read of ``core`` with context, to float32 in [0, 1]."""
        if not self.normalization.clahe:
            return self.normalization.apply(raw, self.value_range(core.z0))
        whole = self._clahe_whole(core.z0)
        bounds = self.volume.bounds(self.mip).section(core.z0)
        return crop_with_context(whole[None], bounds, core, context, raw.shape[0])[0]

    def _clahe_whole(self, z: int) -> np.ndarray:
        with self._lock:  # one whole section at a time: memory bounded by a section
            if self._clahe_section is None or self._clahe_section[0] != z:
                plane = self.volume.read(self.volume.bounds(self.mip).section(z))[0]
                self._clahe_section = (z, self.normalization.normalize_section(plane))
            return self._clahe_section[1]


def _pixels(shape: tuple[int, int, int]) -> int:
    return shape[1] * shape[2]
