"""The emulated VAST's segmentation layer: uint16 ids kept only in the blocks ever written."""

from __future__ import annotations

from typing import Iterator

import numpy as np

_Span = tuple[tuple[int, int], tuple[slice, slice], tuple[slice, slice]]


class SparseLabels:
    """uint16 ids of a ``(z, y, x)`` volume in square blocks, allocated when first written."""

    def __init__(self, shape: tuple[int, int, int], block: int = 256) -> None:
        self.shape, self.block = shape, block
        self._blocks: dict[tuple[int, int, int], np.ndarray] = {}
        self._boxes: dict[tuple[int, int, int], dict[int, tuple[int, ...]]] = {}  # per block, until written again

    def _spans(self, y0: int, y1: int, x0: int, x1: int) -> Iterator[_Span]:
        """Per block the box touches: its (by, bx), the slices inside it, the slices inside the box."""
        b = self.block
        for by in range(y0 // b, -(-y1 // b)):
            for bx in range(x0 // b, -(-x1 // b)):
                ys, ye = max(y0, by * b), min(y1, (by + 1) * b)
                xs, xe = max(x0, bx * b), min(x1, (bx + 1) * b)
                yield (by, bx), (slice(ys - by * b, ye - by * b), slice(xs - bx * b, xe - bx * b)), (
                    slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))  # fmt: skip

    def read(self, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The ids of the half-open mip-0 box as ``(z, y, x)``."""
        out = np.zeros((z1 - z0, y1 - y0, x1 - x0), np.uint16)
        for z in range(z0, z1):
            for (by, bx), inner, outer in self._spans(y0, y1, x0, x1):
                block = self._blocks.get((z, by, bx))
                if block is not None:
                    out[(z - z0, *outer)] = block[inner]
        return out

    def write(self, z0: int, y0: int, x0: int, labels: np.ndarray) -> None:
        """Store ``labels`` (``(z, y, x)``) with its first voxel at ``(x0, y0, z0)``."""
        nz, ny, nx = labels.shape
        for z in range(z0, z0 + nz):
            for key, inner, outer in self._spans(y0, y0 + ny, x0, x0 + nx):
                block = self._blocks.get((z, *key))
                if block is None:
                    block = self._blocks[(z, *key)] = np.zeros((self.block, self.block), np.uint16)
                block[inner] = labels[(z - z0, *outer)]
                self._boxes.pop((z, *key), None)

    def bounding_boxes(self) -> dict[int, tuple[int, int, int, int, int, int]]:
        """id -> inclusive mip-0 ``(x1, y1, z1, x2, y2, z2)`` around its voxels, for every id
        written and still present (0 left out). Blocks not written since the last call are
        not scanned again."""
        boxes: dict[int, tuple[int, int, int, int, int, int]] = {}
        for key, block in self._blocks.items():
            if key not in self._boxes:
                self._boxes[key] = _block_boxes(block, key, self.block)
            for segment, (x1, y1, z1, x2, y2, z2) in self._boxes[key].items():
                old = boxes.get(segment)
                boxes[segment] = (x1, y1, z1, x2, y2, z2) if old is None else (
                    min(old[0], x1), min(old[1], y1), min(old[2], z1), max(old[3], x2), max(old[4], y2), max(old[5], z2))
        return boxes


def _block_boxes(block: np.ndarray, key: tuple[int, int, int], size: int) -> dict[int, tuple[int, ...]]:
    """The box of every non-zero id of one block, in volume coordinates."""
    z, by, bx = key
    ys, xs = np.nonzero(block)
    if not ys.size:
        return {}
    ids = block[ys, xs]
    order = np.argsort(ids, kind="stable")
    ids, ys, xs = ids[order], ys[order] + by * size, xs[order] + bx * size
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lows = zip(np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts))
    highs = zip(np.maximum.reduceat(xs, starts), np.maximum.reduceat(ys, starts))
    return {int(ids[s]): (int(x1), int(y1), z, int(x2), int(y2), z) for s, (x1, y1), (x2, y2) in zip(starts, lows, highs)}
