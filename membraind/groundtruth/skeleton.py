"""Membrane ground truth -> skeleton ground truth (neurite backbones).

The interior of every cell is thinned to its medial axis and widened again into a tube,
so a network can learn to predict backbones that separate touching neurites better
than membranes do. Unannotated pixels stay unannotated.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_holes, remove_small_objects, skeletonize

from membraind.groundtruth.classes import INTERIOR, UNANNOTATED

BACKGROUND, BACKBONE = 1, 2


def membrane_to_skeleton(labels: np.ndarray, tube_radius: float = 4.0, min_size: int = 15) -> np.ndarray:
    """Skeleton labels (uint8: 0 unannotated, 1 background, 2 backbone tube).

    The tube holds the interior pixels closer than ``tube_radius`` to the medial axis of
    the interiors; interior specks and holes under ``min_size`` pixels are cleaned first
    so noise in the painting does not sprout spurious branches.
    """
    interior = labels == INTERIOR
    interior = remove_small_objects(interior, max_size=min_size - 1) if min_size > 1 else interior
    interior = remove_small_holes(interior, max_size=min_size - 1) if min_size > 1 else interior
    # Holes filled inside a cell were membrane specks, but never unannotated pixels.
    interior &= labels != UNANNOTATED
    axis = skeletonize(interior)
    out = np.where(labels == UNANNOTATED, UNANNOTATED, BACKGROUND).astype(np.uint8)
    if axis.any():
        distance = ndimage.distance_transform_edt(~axis)
        out[(distance < tube_radius) & interior] = BACKBONE
    return out

