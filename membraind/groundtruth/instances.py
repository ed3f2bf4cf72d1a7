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


def instances_to_membrane(instances: np.ndarray, thickness: int = 3, fill_ecs: bool = False) -> np.ndarray:
    """Class labels (uint8: 0 unannotated, 1 interior, 2 membrane) from a 2D id image."""
    if thickness < 1:
        raise ValueError(f"membrane thickness must be at least 1 pixel, got {thickness}")
    ids = instances.astype(np.int64, copy=False)
    size = (thickness, thickness)
    border = ndimage.maximum_filter(ids, size=size, mode="nearest") != ndimage.minimum_filter(
        ids, size=size, mode="nearest"
    )
    out = np.full(ids.shape, INTERIOR, dtype=np.uint8)
    background = ids == 0
    out[background] = MEMBRANE if fill_ecs else UNANNOTATED
    out[border] = MEMBRANE
    return out
