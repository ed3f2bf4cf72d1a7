"""Agreement between a prediction and ground truth: membrane classes and cell instances.

Instance scores follow the ISBI 2012 / CREMI conventions: truth id 0 (boundary or
unlabelled) is ignored, so only pixels inside labelled cells are scored. A
segmentation's own boundary (0) pixels are first given the id of the nearest segment,
so the scores measure the partition into cells (what a flood fill in VAST sees), not
how thick the drawn membrane is; a segmentation with no segment at all counts as one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage
from skimage import metrics as skm

from membraind.errors import InputError
from membraind.groundtruth.classes import MEMBRANE


@dataclass
class ConfusionCounts:
    """Running pixel counts from which accuracy and membrane F1 follow (sums over batches)."""

    pixels: int = 0
    correct: int = 0
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> "ConfusionCounts":
        """Count the class images ``predicted`` against ``truth`` over the pixels in ``where``."""
        if where is not None:
            predicted, truth = predicted[where], truth[where]
        p, t = predicted == MEMBRANE, truth == MEMBRANE
        self.pixels += predicted.size
        self.correct += int(np.count_nonzero(predicted == truth))
        self.true_positive += int(np.count_nonzero(p & t))
        self.false_positive += int(np.count_nonzero(p & ~t))
        self.false_negative += int(np.count_nonzero(~p & t))
        return self

    def __iadd__(self, other: "ConfusionCounts") -> "ConfusionCounts":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def accuracy(self) -> float:
        """Fraction of counted pixels whose classes agree."""
        return self.correct / self.pixels if self.pixels else 1.0

    @property
    def membrane_f1(self) -> float:
        """F1 score of the membrane class (1.0 when neither side has membrane)."""
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative
        return 2 * self.true_positive / denominator if denominator else 1.0


def membrane_f1(predicted: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """F1 score of the membrane class, over the pixels in ``where`` (default: all)."""
    return ConfusionCounts().add(predicted, truth, where).membrane_f1


def pixel_accuracy(predicted: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of pixels (in ``where``) whose classes agree."""
    return ConfusionCounts().add(predicted, truth, where).accuracy


@dataclass(frozen=True)
class SegmentationScores:
    """Instance-segmentation agreement with ground truth (lower is better, 0 = identical)."""

    vi_split: float  # H(segmentation | truth) in bits: over-segmentation
    vi_merge: float  # H(truth | segmentation) in bits: under-segmentation
    adapted_rand: float  # 1 - Rand F-score, as in ISBI 2012
    membrane_f1: float | None = None  # boundary (0) vs truth boundary, when asked for

    @property
    def vi(self) -> float:
        """Variation of information, split + merge."""
        return self.vi_split + self.vi_merge


def _scored_ids(segmentation: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compact ids (truth, segmentation) of the truth-labelled pixels, segmentation 0 as singletons."""
    segmentation, truth = np.asarray(segmentation), np.asarray(truth)
    if segmentation.shape != truth.shape:
        raise InputError(f"segmentation shape {segmentation.shape} differs from ground truth shape {truth.shape}")
    scored = truth != 0
    if not scored.any():
        raise InputError("ground truth has no labelled (non-zero) pixel to score against")
    seg, tru = fill_boundary(segmentation)[scored], truth[scored]
    # Compact ids keep skimage's contingency table small whatever the id values are.
    seg = np.unique(seg, return_inverse=True)[1].reshape(-1) + 1
    tru = np.unique(tru, return_inverse=True)[1].reshape(-1) + 1
    return tru, seg


def fill_boundary(segmentation: np.ndarray) -> np.ndarray:
    """``segmentation`` with every 0 pixel given the id of the nearest non-zero pixel."""
    boundary = segmentation == 0
    if not boundary.any() or boundary.all():
        return segmentation
    nearest = ndimage.distance_transform_edt(boundary, return_distances=False, return_indices=True)
    return segmentation[tuple(nearest)]


def variation_of_information(segmentation: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(split, merge)`` conditional entropies in bits (see module docstring for ignored pixels)."""
    tru, seg = _scored_ids(segmentation, truth)
    split, merge = skm.variation_of_information(tru, seg)
    return float(split), float(merge)


def adapted_rand_error(segmentation: np.ndarray, truth: np.ndarray) -> float:
    """Adapted Rand error (1 - F-score of pixel-pair agreement), 0 = identical."""
    tru, seg = _scored_ids(segmentation, truth)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-singleton input: recall is 0/0, error still defined
        return float(skm.adapted_rand_error(tru, seg, ignore_labels=())[0])


def score_segmentation(
    labels: np.ndarray, truth_instances: np.ndarray, truth_membrane: np.ndarray | None = None
) -> SegmentationScores:
    """VI and adapted Rand of ``labels`` against ``truth_instances``.

    With ``truth_membrane`` (bool, True = membrane) the membrane F1 of the
    segmentation's boundary (``labels == 0``) is added, scored over every pixel.
    """
    split, merge = variation_of_information(labels, truth_instances)
    f1 = None
    if truth_membrane is not None:
        predicted = np.where(np.asarray(labels) == 0, MEMBRANE, 0)
        f1 = membrane_f1(predicted, np.where(np.asarray(truth_membrane, dtype=bool), MEMBRANE, 0))
    return SegmentationScores(split, merge, adapted_rand_error(labels, truth_instances), f1)
