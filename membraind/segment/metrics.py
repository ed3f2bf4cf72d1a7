"""Agreement between a prediction and ground truth."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

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
