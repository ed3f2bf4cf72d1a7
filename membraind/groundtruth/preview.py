"""Looking at what the network will see: contact sheets and patch export."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from membraind.groundtruth.classes import INTERIOR, MEMBRANE, THIRD
from membraind.groundtruth.sampler import Patch
from membraind.volumes.image_files import write_image

# Class -> (RGB tint, opacity) on the EM.
OVERLAY = {INTERIOR: ((40, 200, 80), 0.12), MEMBRANE: ((255, 40, 40), 0.45), THIRD: ((40, 120, 255), 0.45)}
GAP = 4


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 view of a [0, 1] image with its classes tinted on top."""
    gray = np.clip(image * 255.0, 0, 255).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for klass, (colour, alpha) in OVERLAY.items():
        where = labels == klass
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32)
    return rgb.astype(np.uint8)


def contact_sheet(patches: Sequence[Patch], columns: int = 8) -> np.ndarray:
    """Patches with their labels overlaid, in a grid (RGB uint8)."""
    if not patches:
        raise ValueError("a contact sheet needs at least one patch")
    p = patches[0].image.shape[0]
    rows = -(-len(patches) // columns)
    cols = min(columns, len(patches))
    sheet = np.full((rows * (p + GAP) + GAP, cols * (p + GAP) + GAP, 3), 255, np.uint8)
    for k, patch in enumerate(patches):
        r, c = divmod(k, columns)
        y, x = GAP + r * (p + GAP), GAP + c * (p + GAP)
        sheet[y : y + p, x : x + p] = overlay(patch.image, patch.labels)
    return sheet


def label_png(labels: np.ndarray, classes: int) -> np.ndarray:
    """Labels as mEMbrain's patch PNGs store them: 255 * (class - 1) / (classes - 1)."""
    return np.rint(255.0 * (labels.astype(np.float32) - 1) / (classes - 1)).clip(0, 255).astype(np.uint8)


def export_patches(patches: Sequence[Patch], names: Sequence[str], out: Path, classes: int = 2) -> tuple[Path, Path]:
    """Write ``out/em/<name>_%05d.png`` and ``out/labels/<name>_%05d.png`` for inspection.

    ``names`` gives the ground-truth image name of each patch's source.
    """
    em_dir, label_dir = Path(out) / "em", Path(out) / "labels"
    counters: dict[str, int] = {}
    for patch in patches:
        name = names[patch.source]
        counters[name] = counters.get(name, 0) + 1
        stem = f"{name}_{counters[name]:05d}.png"
        write_image(em_dir / stem, np.clip(patch.image * 255.0 + 0.5, 0, 255).astype(np.uint8))
        write_image(label_dir / stem, label_png(patch.labels, classes))
    return em_dir, label_dir
