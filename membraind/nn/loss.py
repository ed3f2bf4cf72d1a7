"""Losses for sparse labels: unannotated pixels never contribute.

Following torch-em's idea (its ``MaskIgnoreLabel`` wrapper), the trainer never
special-cases sparse labels: it hands the label classes of its patches to
:class:`MaskUnannotated`, which masks what is not annotated and maps the other classes
to network channels for the loss it wraps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IGNORE = -1  # target value of unannotated pixels (class 0 shifted down by one)


def targets_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label classes (0 unannotated, k + 1 = channel k) -> channel targets with ``IGNORE``."""
    return labels.long() - 1


class SparseSegmentationLoss(nn.Module):
    """Cross-entropy, plus optionally soft Dice of the membrane channel, over annotated pixels.

    Dice rewards getting the thin membrane class right as a whole, which is what the
    membrane F1 (and VAST's flood fill) cares about; cross-entropy keeps every pixel's
    probability calibrated.
    """

    def __init__(self, class_weights: torch.Tensor | None = None, dice_weight: float = 0.0, membrane_channel: int = 1):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(weight=class_weights, ignore_index=IGNORE)
        self.dice_weight = dice_weight
        self.membrane_channel = membrane_channel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, C, H, W), ``target`` (N, H, W) with classes 0..C-1 and -1 = unannotated."""
        loss = self.cross_entropy(logits, target)
        if self.dice_weight:
            annotated = (target != IGNORE).float()
            membrane = torch.softmax(logits, dim=1)[:, self.membrane_channel] * annotated
            truth = (target == self.membrane_channel).float()
            overlap = (membrane * truth).sum()
            dice = 1 - (2 * overlap + 1) / (membrane.sum() + truth.sum() + 1)
            loss = loss + self.dice_weight * dice
        return loss

    def cross_entropy_of_log_probabilities(self, log_p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The (weighted) cross-entropy term alone, from log-probabilities (N, C, H, W) on the CPU."""
        weight = self.cross_entropy.weight
        weight = weight.cpu() if weight is not None else None
        return nn.functional.nll_loss(log_p, target, weight=weight, ignore_index=IGNORE)


class MaskUnannotated(nn.Module):
    """Wraps a loss over channel targets so that it takes label classes instead.

    Label class 0 (unannotated) is ignored; class ``k + 1`` is the network's channel ``k``.
    """

    def __init__(self, loss: SparseSegmentationLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, C, H, W), ``labels`` (N, H, W) label classes."""
        return self.loss(logits, targets_from_labels(labels))

    def validation_loss(self, probabilities: np.ndarray, labels: np.ndarray) -> float:
        """Cross-entropy (without the Dice term, comparable across settings) of one image's
        probabilities (C, H, W) against its label classes (H, W)."""
        target = targets_from_labels(torch.from_numpy(labels))[None]
        log_p = torch.from_numpy(np.log(np.clip(probabilities, 1e-7, 1.0)))[None]
        return float(self.loss.cross_entropy_of_log_probabilities(log_p, target))
