"""Instance labels (one id per cell) -> membrane ground truth.

A pixel is membrane when its t x t neighbourhood holds more than one id, so membranes
are about t pixels wide and centred on id changes (mEMbrain's "Neuron to Membrane").
Id 0 is extracellular space or unlabelled: with ``fill_ecs`` it becomes membrane,
otherwise it stays unannotated (mEMbrain called it interior, which taught networks
that unlabelled gaps are cytoplasm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from membraind.groundtruth.classes import INTERIOR, MEMBRANE, UNANNOTATED

#: Sparse painting: an unpainted gap at most this wide (px) between two painted cells is
#: their membrane (cells painted one segment each leave the membrane unpainted).
SPARSE_GAP = 6


def instances_to_membrane(
    instances: np.ndarray, thickness: int = 3, fill_ecs: bool = False, sparse: bool = False
) -> np.ndarray:
    """Class labels (uint8: 0 unannotated, 1 interior, 2 membrane) from a 2D id image.

    ``sparse``: id 0 is paint nobody put there (a few cells painted in VAST). Membrane is
    only where two painted cells meet, or an unpainted gap at most :data:`SPARSE_GAP` px
    wide lies between them; a cell's edge towards the rest of the unpainted area stays
    unannotated, since nobody said whether a membrane lies there.
    """
    if thickness < 1:
        raise ValueError(f"membrane thickness must be at least 1 pixel, got {thickness}")
    ids = instances.astype(np.int64, copy=False)
    size = (thickness, thickness)
    if sparse:
        return _sparse_membrane(ids, size)
    border = ndimage.maximum_filter(ids, size=size, mode="nearest") != ndimage.minimum_filter(
        ids, size=size, mode="nearest"
    )
    out = np.full(ids.shape, INTERIOR, dtype=np.uint8)
    background = ids == 0
    out[background] = MEMBRANE if fill_ecs else UNANNOTATED
    out[border] = MEMBRANE
    return out


def _sparse_membrane(ids: np.ndarray, size: tuple[int, int], gap: int = SPARSE_GAP) -> np.ndarray:
    in_gap = (ids == 0) & (_between_along(ids, gap, axis=0) | _between_along(ids, gap, axis=1))
    unpainted = int(ids.max()) + 1  # stands in for 0, so that the smallest id nearby is a painted one
    lowest = ndimage.minimum_filter(np.where(ids == 0, unpainted, ids), size=size, mode="nearest")
    highest = ndimage.maximum_filter(ids, size=size, mode="nearest")
    touching = (ids != 0) & (lowest != highest) & (highest != 0)  # another cell within the membrane's width
    at_gap = (ids != 0) & ndimage.maximum_filter(in_gap, size=size, mode="constant")
    out = np.full(ids.shape, INTERIOR, dtype=np.uint8)
    near_unpainted = ndimage.minimum_filter(ids, size=size, mode="nearest") == 0
    out[(ids == 0) | near_unpainted] = UNANNOTATED  # facing unpainted area: nobody said
    out[in_gap | touching | at_gap] = MEMBRANE
    return out


def _between_along(ids: np.ndarray, gap: int, axis: int) -> np.ndarray:
    """Pixels with painted pixels of two different cells on either side along ``axis``, at most ``gap`` px apart."""
    before, after = np.zeros_like(ids), np.zeros_like(ids)
    before_at, after_at = np.full(ids.shape, gap + 1), np.full(ids.shape, gap + 1)
    for step in range(gap, 0, -1):  # nearest last, so it wins
        shifted = _shift(ids, step, axis)
        found = shifted != 0
        before[found], before_at[found] = shifted[found], step
        shifted = _shift(ids, -step, axis)
        found = shifted != 0
        after[found], after_at[found] = shifted[found], step
    return (before != 0) & (after != 0) & (before != after) & (before_at + after_at <= gap + 1)


def _shift(ids: np.ndarray, step: int, axis: int) -> np.ndarray:
    """``ids`` moved ``step`` px along ``axis`` (each pixel gets the one ``step`` before it), 0 beyond the edge."""
    out = np.zeros_like(ids)
    source = [slice(None)] * 2
    target = [slice(None)] * 2
    source[axis], target[axis] = (slice(None, -step), slice(step, None)) if step > 0 else (slice(-step, None), slice(None, step))
    out[tuple(target)] = ids[tuple(source)]
    return out
