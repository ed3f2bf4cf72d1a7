"""Learning from unpainted pixels: a mean teacher's confident predictions as their targets.

A section painted over 15% still shows the network all of its EM. Patches that reach
into unpainted EM (:class:`~membraind.groundtruth.sampler.PatchSampler` with
``min_painted`` below 1) carry both: the supervised loss sees their painted pixels, this
term their unpainted ones. As in FixMatch and mean teacher:

- the *teacher*, a moving average of the student's weights (in eval mode), predicts
  the patch as the sampler cut it (the weak view);
- the *student* trains on a strong view of the same patch: intensities only (contrast,
  gamma, noise), so every pixel still lies where the teacher saw it;
- an unpainted pixel whose teacher probability reaches ``confidence`` becomes a
  cross-entropy target of that class; the term is averaged over all unpainted pixels of
  the batch, so an unsure teacher teaches little. Painted pixels never get a
  pseudo-label: they stay the truth.

The cost is one forward pass of the teacher per step, without gradients. Whether a run
uses it, and the patches it needs, is decided by :mod:`membraind.groundtruth.painted_share`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from membraind.groundtruth.augment import Augmenter
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.settings import AugmentationSettings
from membraind.nn.settings import UnpaintedSettings

__all__ = ["UnpaintedLearning", "strong_view_settings"]


def strong_view_settings(settings: UnpaintedSettings) -> AugmentationSettings:
    """The student's view: every patch's contrast, gamma and noise changed, nothing moved."""
    view = AugmentationSettings.none().model_dump()
    view.update({
        "brightness_contrast": {"probability": 1.0, "brightness": 0.1, "contrast": settings.strong_contrast},
        "gamma": {"probability": 1.0, "gamma": settings.strong_gamma},
        "noise": {"probability": float(settings.strong_noise > 0), "sigma_max": max(settings.strong_noise, 1e-3)},
    })  # fmt: skip
    return AugmentationSettings.model_validate(view)


class UnpaintedLearning:
    """The teacher and the unpainted-pixel term of one training run (see the module docstring)."""

    def __init__(self, model: nn.Module, settings: UnpaintedSettings) -> None:
        self.settings = settings
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self._strong = Augmenter(strong_view_settings(settings))

    def student_view(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The strong view of a batch of patches (N, P, P) float32."""
        return np.stack([self._strong.photometric(image, rng) for image in images])

    def loss(self, student_logits: torch.Tensor, weak: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted term: student ``student_logits`` (N, C, H, W) against the teacher's confident
        classes on the ``weak`` view (N, 1, H, W), over the unpainted pixels of ``labels`` (N, H, W)."""
        unpainted = labels == UNANNOTATED
        if not bool(unpainted.any()) or self.settings.weight == 0:
            return student_logits.sum() * 0.0  # keeps the graph; nothing to learn here
        with torch.no_grad():
            probabilities = torch.softmax(self.teacher(weak).float(), dim=1)
            confidence, target = probabilities.max(dim=1)
            keep = unpainted & (confidence >= self.settings.confidence)
        per_pixel = nn.functional.cross_entropy(student_logits.float(), target, reduction="none")
        return self.settings.weight * (per_pixel * keep).sum() / unpainted.sum()

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher's weights towards the student's; copy its batch-norm statistics."""
        decay = self.settings.teacher_decay
        for mine, theirs in zip(self.teacher.parameters(), student.parameters()):
            mine.lerp_(theirs.detach(), 1.0 - decay)
        for mine, theirs in zip(self.teacher.buffers(), student.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's weights, for the run's checkpoint."""
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the teacher from a checkpoint."""
        self.teacher.load_state_dict(state)
