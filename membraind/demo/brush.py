"""Imitating a user's partial annotation: erase irregular regions of a full label, or keep only brush strokes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from membraind.groundtruth.classes import UNANNOTATED


def erase_irregular(labels: np.ndarray, fraction: float = 0.7, seed: int = 0, smoothness: float = 40.0) -> np.ndarray:
    """A copy of ``labels`` with an irregular ``fraction`` of its pixels set to unannotated.

    The kept part is a union of smooth blobs, like brush strokes; ``smoothness`` is
    their scale in pixels.
    """
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(labels.shape), smoothness, mode="wrap")
    erased = field < np.quantile(field, fraction)
    out = labels.copy()
    out[erased] = UNANNOTATED
    return out


def keep_strokes(
    labels: np.ndarray, width: float, strokes: list[tuple[float, float, float, float]]
) -> np.ndarray:
    """A copy of ``labels`` kept only under straight brush strokes, everything else unannotated.

    Each stroke is ``(y0, x0, y1, x1)``, a segment in pixel coordinates painted ``width``
    pixels wide: a pixel is kept when its centre lies closer than ``width / 2`` to it.
    """
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]].astype(np.float64)
    painted = np.zeros(labels.shape, bool)
    for y0, x0, y1, x1 in strokes:
        dy, dx = y1 - y0, x1 - x0
        along = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
        painted |= np.hypot(yy - (y0 + along * dy), xx - (x0 + along * dx)) < width / 2
    out = labels.copy()
    out[~painted] = UNANNOTATED
    return out


def brush_discs(shape: tuple[int, int], coverage: float, seed: int = 0, radius: tuple[int, int] = (10, 22)) -> np.ndarray:
    """Where a user dabbed the brush: seeded discs (radii in ``radius``, pixels) until about
    ``coverage`` of a ``shape`` section is covered; a boolean mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    painted = np.zeros(shape, bool)
    while painted.mean() < coverage:
        y, x, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(radius[0], radius[1] + 1)
        painted |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return painted
