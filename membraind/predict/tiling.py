"""Tiles of a prediction: a global grid at the prediction mip, and reads with context.

Output tiles sit on a fixed grid (``tile_size`` pixels, tile (r, c) covers rows
``r*T .. (r+1)*T``), the grid of the tile store, so any prediction of any box writes
whole tiles that later predictions can skip or replace. Each tile is predicted from
its box grown by ``context`` pixels on every side; outside the volume the image is
continued by reflection, exactly as whole-section prediction pads, so a pixel's
prediction does not depend on which tile it falls in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from membraind.volumes.box import Box
from membraind.volumes.volume import Volume

__all__ = ["TileKey", "TileGrid", "read_with_context", "crop_with_context"]


@dataclass(frozen=True, order=True)
class TileKey:
    """One output tile: section ``z``, tile ``row`` and ``col`` on the grid."""

    z: int
    row: int
    col: int


class TileGrid:
    """The tile grid over a volume at one mip level."""

    def __init__(self, volume: Volume, mip: int, tile_size: int) -> None:
        self.mip = mip
        self.tile_size = tile_size
        self.bounds = volume.bounds(mip)
        _, height, width = self.bounds.shape
        self.rows = -(-height // tile_size)
        self.cols = -(-width // tile_size)

    def core(self, key: TileKey) -> Box:
        """The pixels tile ``key`` holds (clipped to the volume at the right and bottom edges)."""
        t = self.tile_size
        box = Box(
            x0=key.col * t, x1=(key.col + 1) * t, y0=key.row * t, y1=(key.row + 1) * t,
            z0=key.z, z1=key.z + 1, mip=self.mip,
        )  # fmt: skip
        return box.intersect(self.bounds)

    def touching(self, box: Box) -> list[TileKey]:
        """Every tile that overlaps ``box`` (any mip; converted), in (z, row, col) order."""
        box = box.at_mip(self.mip).intersect(self.bounds)
        if box.empty:
            return []
        t = self.tile_size
        return [
            TileKey(z, r, c)
            for z in range(box.z0, box.z1)
            for r in range(box.y0 // t, -(-box.y1 // t))
            for c in range(box.x0 // t, -(-box.x1 // t))
        ]

    def union(self, boxes: Iterable[Box]) -> list[TileKey]:
        """The tiles any of ``boxes`` touches, each once, in (z, row, col) order."""
        return sorted({key for box in boxes for key in self.touching(box)})


def _reflect_pad(array: np.ndarray, before: tuple[int, int], after: tuple[int, int]) -> np.ndarray:
    if not any(before + after):
        return array
    pad = [(0, 0), (before[0], after[0]), (before[1], after[1])] + [(0, 0)] * (array.ndim - 3)
    # 'reflect' needs two pixels; a one-pixel-wide strip can only be repeated.
    mode = "reflect" if min(array.shape[1:3]) > 1 else "edge"
    return np.pad(array, pad, mode=mode)


def crop_with_context(source: np.ndarray, source_box: Box, core: Box, context: int, size: int) -> np.ndarray:
    """Cut ``core`` grown by ``context`` from ``source`` (the pixels of ``source_box``),
    continuing the image by reflection where the grown box leaves ``source_box``, and pad
    bottom/right (again by reflection) to ``size`` x ``size``."""
    want = core.grow(context)
    have = want.intersect(source_box)
    cut = source[have.slices(source_box)]
    before = (have.y0 - want.y0, have.x0 - want.x0)
    after = (want.y1 - have.y1 + size - want.shape[1], want.x1 - have.x1 + size - want.shape[2])
    return _reflect_pad(cut, before, after)


def read_with_context(volume: Volume, core: Box, context: int, size: int) -> np.ndarray:
    """Read ``core`` grown by ``context`` from ``volume`` as a ``(z, size, size)`` array."""
    bounds = volume.bounds(core.mip)
    readable = core.grow(context).intersect(bounds)
    return crop_with_context(volume.read(readable), readable, core, context, size)


def input_size(tile_size: int, context: int, multiple: int) -> int:
    """Side of the network input for a tile: tile plus context, rounded up to ``multiple``."""
    side = tile_size + 2 * context
    return side + (-side) % multiple
