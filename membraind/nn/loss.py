"""Losses for sparse labels: unannotated pixels (target -1) never contribute.

Following torch-em's idea, the trainer never special-cases sparse labels: the loss
itself masks what is not annotated.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE = -1  # target value of unannotated pixels (class 0 shifted down by one)


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
