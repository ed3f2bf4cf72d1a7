"""Imitating a user's partial annotation: erase irregular regions of a full label."""

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
