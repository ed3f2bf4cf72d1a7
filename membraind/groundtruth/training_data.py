"""The ground truth of one training run: training and validation images, and their sources.

The sources (EM folder, label folder, label mapping) are stored in the trained bundle,
so that episodic fine-tuning can load the parent's data again (:func:`load_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from membraind.errors import InputError
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.label_mapping import PRESETS
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth

if TYPE_CHECKING:
    from membraind.vast.painted import GroundTruthRecord


@dataclass
class TrainingData:
    """Training and validation images, and where they came from (stored in the bundle).

    Ground truth read from VAST also says at which ``mip`` and voxel size (nm, at that
    mip) it was read, and what was painted (``ground_truth``, the bundle's lineage).
    """

    train: list[GroundTruthImage]
    validation: list[GroundTruthImage]
    sources: list[dict] = field(default_factory=list)
    mip: int = 0
    voxel_size: tuple[float, float, float] | None = None
    ground_truth: GroundTruthRecord | None = None


def split_validation(images: list[GroundTruthImage], fraction: float) -> tuple[list, list]:
    """Hold out whole images (the last ``fraction``), or, for one image, its bottom rows.

    A held-out band is erased from the training copy, so no training patch (which must
    be wholly annotated) can overlap it.
    """
    if len(images) >= 2:
        held = max(1, round(fraction * len(images)))
        return images[:-held], images[-held:]
    (only,) = images
    cut = int(round(only.labels.shape[0] * (1 - fraction)))
    train_labels = only.labels.copy()
    train_labels[cut:] = UNANNOTATED
    val_labels = np.full_like(only.labels, UNANNOTATED)
    val_labels[cut:] = only.labels[cut:]
    return (
        [GroundTruthImage(only.name, only.em, train_labels, labels_from=only.labels_from)],
        [GroundTruthImage(only.name, only.em, val_labels, labels_from=only.labels_from)],
    )


def load_training_data(
    em: Path,
    labels: Path,
    mapping: LabelMapping,
    validation_fraction: float,
    val_em: Path | None = None,
    val_labels: Path | None = None,
) -> TrainingData:
    """Load ground truth and set validation aside (a given validation set, else a split)."""
    train = load_ground_truth(em, labels, mapping)
    sources = [{"em": str(Path(em).resolve()), "labels": str(Path(labels).resolve()), "mapping": mapping.values}]
    if (val_em is None) != (val_labels is None):
        raise InputError("give both --val-em and --val-labels, or neither (then part of the training data is held out)")
    if val_em is not None:
        validation = load_ground_truth(val_em, val_labels, mapping)
    else:
        train, validation = split_validation(train, validation_fraction)
    return TrainingData(train, validation, sources)


def save_sources(data: TrainingData, folder: Path) -> list[dict]:
    """Write ``data``'s images as label folders under ``folder`` (``train/em``, ``train/labels``,
    ``validation/...``) and return them as sources, so that they can be loaded again
    (episodic fine-tuning of a child replays them) after the painting they came from changed."""
    from membraind.vast.groundtruth import export_ground_truth

    sources = []
    for part, images in (("train", data.train), ("validation", data.validation)):
        if images:
            em, labels = export_ground_truth(images, Path(folder) / part)
            sources.append({"em": str(em.resolve()), "labels": str(labels.resolve()), "mapping": dict(PRESETS["classes"])})
    return sources


def load_sources(sources: list[dict]) -> list[GroundTruthImage]:
    """Every image of the recorded ``sources`` (as :func:`load_training_data` records them)."""
    images = []
    for source in sources:
        images += load_ground_truth(Path(source["em"]), Path(source["labels"]), LabelMapping(values=source["mapping"]))
    return images
