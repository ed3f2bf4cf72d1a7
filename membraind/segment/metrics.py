"""Agreement between a prediction and ground truth."""

from __future__ import annotations

import numpy as np

from membraind.groundtruth.classes import MEMBRANE


def membrane_f1(predicted: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """F1 score of the membrane class, over the pixels in ``where`` (default: all)."""
    p = predicted == MEMBRANE
    t = truth == MEMBRANE
    if where is not None:
        p, t = p[where], t[where]
    tp = np.count_nonzero(p & t)
    denominator = np.count_nonzero(p) + np.count_nonzero(t)
    return 2.0 * tp / denominator if denominator else 1.0


def pixel_accuracy(predicted: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of pixels (in ``where``) whose classes agree."""
    same = predicted == truth
    return float(same[where].mean() if where is not None else same.mean())
