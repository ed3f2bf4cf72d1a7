"""How much of the ground truth is painted, and what follows from it for training.

Torch-free, so that ``preview-patches`` shows the patches training would cut without
loading the network code.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.groundtruth.settings import SamplerSettings
from membraind.nn.settings import UnpaintedSettings

__all__ = ["PARTIAL_PATCH_PAINTED", "painted_share", "unpainted_active", "patch_min_painted"]

#: Patches of a run that learns from unpainted pixels hold at least this share of painted
#: ones, unless ``sampler.min_painted`` is set: one 15 px brush disc in a 128 px patch.
PARTIAL_PATCH_PAINTED = 0.05


def painted_share(images: Sequence[GroundTruthImage]) -> float:
    """The share of the images' pixels that are painted (annotated)."""
    total = sum(gt.labels.size for gt in images)
    return sum(int(np.count_nonzero(gt.labels != UNANNOTATED)) for gt in images) / max(total, 1)


def unpainted_active(settings: UnpaintedSettings, share: float) -> bool:
    """Whether unpainted-pixel learning is on: ``mode`` on, or auto with less than ``auto_below`` painted."""
    return settings.mode == "on" or (settings.mode == "auto" and share < settings.auto_below)


def patch_min_painted(sampler: SamplerSettings, learn_unpainted: bool) -> float:
    """The painted share each patch needs: the setting, else :data:`PARTIAL_PATCH_PAINTED`
    while unpainted-pixel learning is on (patches reach into unpainted EM), else 1."""
    if sampler.min_painted is not None:
        return sampler.min_painted
    return PARTIAL_PATCH_PAINTED if learn_unpainted else 1.0
