"""Synthetic ground truth, and EM restyled to look like another lab's.

The starter model (``scripts/train_starter.py``) and the benchmarks that check how far a
network travels (``benchmarks/transfer.py``, ``benchmarks/sparse_labels.py``) need
labelled EM that is not ISBI 2012 and does not look like it. The synthetic generator
gives exact labels; :func:`restyle` changes what differs between labs and leaves the
labels valid: gamma (detector response), contrast, blur (focus) and noise. Pixel size is
changed at generation, through the cell diameter, so labels stay exact.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from membraind.demo.synthetic_em import generate_stack
from membraind.groundtruth.classes import THIRD, UNANNOTATED
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.strict import StrictModel

__all__ = ["LabLook", "OTHER_LAB", "synthetic_ground_truth", "restyle"]


class LabLook(StrictModel):
    """How a lab's EM differs from the generator's plain look."""

    cell_diameter: float = 70.0  # px: a finer pixel size shows the same cells larger
    gamma: float = 1.0  # gray' = gray ** gamma (on [0, 1])
    contrast: float = 1.0  # gray values squeezed about mid-gray (< 1) or spread (> 1)
    blur: float = 0.0  # Gaussian sigma, px
    noise: float = 0.0  # Gaussian noise sigma, in gray levels of 255


#: The look that ``benchmarks/transfer.py`` tests against: finer pixels (cells 1.6 times the
#: generator's default size), bright and flat (gamma 0.55, contrast 0.6), soft and noisy.
OTHER_LAB = LabLook(cell_diameter=110.0, gamma=0.55, contrast=0.6, blur=1.2, noise=14.0)


def restyle(em: np.ndarray, look: LabLook, seed: int = 0) -> np.ndarray:
    """``em`` (uint8 section) as ``look`` shows it (uint8); the same seed gives the same noise."""
    image = em.astype(np.float32) / 255.0
    if look.blur:
        image = ndimage.gaussian_filter(image, look.blur)
    image = np.clip((image - 0.5) * look.contrast + 0.5, 0.0, 1.0) ** look.gamma * 255.0
    if look.noise:
        image = image + np.random.default_rng(seed).normal(0.0, look.noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def synthetic_ground_truth(
    seed: int, sections: int, look: LabLook | None = None, shape: tuple[int, int] = (512, 512), name: str = "synthetic"
) -> list[GroundTruthImage]:
    """``sections`` synthetic sections in ``look`` with their labels for a 2-class network: the
    generator's extracellular space (class 3) is left unannotated, neither trained nor scored."""
    look = look or LabLook()
    stack = generate_stack(seed=seed, sections=sections, shape=shape, cell_diameter=look.cell_diameter)
    labels = np.where(stack.labels == THIRD, UNANNOTATED, stack.labels).astype(np.uint8)
    return [
        GroundTruthImage(f"{name}-{seed}-{z:03d}", restyle(stack.em[z], look, seed * 1000 + z), labels[z])
        for z in range(sections)
    ]
