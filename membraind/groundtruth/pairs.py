"""Importing ground truth: EM sections paired with their label sections by name.

Pairing is by name, never by listing order (mEMbrain paired the i-th EM file with the
i-th label file, so one missing file shifted every pair after it). A label file may
carry a suffix such as ``_label`` or ``_border`` after the EM file's stem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from membraind.errors import InputError
from membraind.groundtruth.classes import MEMBRANE, UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.volumes.sections import Section, list_sections

LABEL_SUFFIXES = ("_labels", "_label", "_gt", "_border", "_skel", "_membrane", "_mask")

MEMBRANE_SHARE_LIMIT = 0.5
"""A section whose annotated pixels are more than this share membrane is warned about:
membrane covers 10-30% of EM sections (17-27% in ISBI 2012), so more usually means that
pixels erased with a gray value the mapping reads as membrane (0 with ``isbi``) are
being trained on as membrane."""

ERASE_GRAY = 128
"""The gray value the warning suggests erasing with (mid-gray: neither ISBI class)."""

log = logging.getLogger(__name__)


@dataclass
class GroundTruthImage:
    """One EM section and its class labels (0 unannotated, 1 interior, 2 membrane, 3 third)."""

    name: str
    em: np.ndarray
    labels: np.ndarray
    warning: str | None = None  #: set on import when the labels look wrong (:func:`membrane_share_warning`)
    labels_from: str = ""  #: where the labels were read (a file, a page of a stack, a VAST box), for messages

    @property
    def membrane_fraction(self) -> float:
        """Membrane pixels as a fraction of the annotated pixels."""
        annotated = np.count_nonzero(self.labels != UNANNOTATED)
        return float(np.count_nonzero(self.labels == MEMBRANE)) / max(annotated, 1)

    @property
    def annotated_fraction(self) -> float:
        """Annotated pixels as a fraction of all pixels."""
        return float(np.count_nonzero(self.labels != UNANNOTATED)) / self.labels.size


def _label_key(name: str) -> str:
    lower = name.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def pair_sections(em_path: Path, label_path: Path) -> list[tuple[Section, Section]]:
    """Pair EM and label sections by name; any unmatched file is an error naming it."""
    em_sections = list_sections(em_path, "EM")
    label_sections = list_sections(label_path, "label")
    if (em_sections[0].page is None) != (label_sections[0].page is None):
        raise InputError(
            f"cannot pair {em_path} with {label_path}: pair a folder with a folder, or a TIFF stack with a TIFF stack"
        )
    labels = {}
    for section in label_sections:
        for key in {section.name, _label_key(section.name)}:
            labels.setdefault(key, section)
    pairs, missing = [], []
    for em in em_sections:
        label = labels.get(em.name)
        if label is None:
            missing.append(em.where)
        else:
            pairs.append((em, label))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(
            f"no label in {label_path} for {len(missing)} EM section(s): {shown}; "
            f"label files must be named like the EM file (optionally with a suffix such as {LABEL_SUFFIXES[1]})"
        )
    used = {label.where for _, label in pairs}
    extra = [s.where for s in label_sections if s.where not in used]
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise InputError(f"label section(s) without an EM section in {em_path}: {shown}; remove them or add their EM")
    return pairs


def read_em(section: Section) -> np.ndarray:
    """Read an EM section, refusing colour images (the networks take one gray channel)."""
    em = section.read()
    if em.ndim != 2:
        raise InputError(
            f"EM image {section.where} has {em.shape[-1]} colour channels; EM must be grayscale "
            "(convert it to 8- or 16-bit gray, e.g. with Fiji: Image > Type > 8-bit)"
        )
    if not (np.issubdtype(em.dtype, np.integer) or np.issubdtype(em.dtype, np.floating)):
        raise InputError(f"EM image {section.where} has pixel type {em.dtype}; expected 8/16-bit gray")
    return em


def load_ground_truth(em_path: Path, label_path: Path, mapping: LabelMapping) -> list[GroundTruthImage]:
    """Load and check every EM/label pair: sizes must match and labels must fit ``mapping``."""
    images = []
    for em_section, label_section in pair_sections(em_path, label_path):
        em = read_em(em_section)
        raw = label_section.read()
        if raw.shape[:2] != em.shape:
            raise InputError(
                f"size mismatch: EM {em_section.where} is {em.shape[1]}x{em.shape[0]} px but label "
                f"{label_section.where} is {raw.shape[1]}x{raw.shape[0]} px; they must be the same size"
            )
        image = GroundTruthImage(em_section.name, em, mapping.apply(raw, label_section.where),
                                 labels_from=label_section.where)  # fmt: skip
        image.warning = membrane_share_warning(image, mapping, label_section.where)
        if image.warning:
            log.warning("%s", image.warning)
        images.append(image)
    return images


def membrane_share_warning(image: GroundTruthImage, mapping: LabelMapping, where: str) -> str | None:
    """A warning when more than :data:`MEMBRANE_SHARE_LIMIT` of ``image``'s annotated pixels
    are membrane, naming the file (``where``), the share, the likely cause and the fix."""
    share = image.membrane_fraction
    if share <= MEMBRANE_SHARE_LIMIT:
        return None
    membrane_grays = ", ".join(str(gray) for gray, klass in sorted(mapping.values.items()) if klass == MEMBRANE)
    erase = next(gray for gray in (ERASE_GRAY, *range(256)) if gray not in mapping.values)
    return (
        f"label {where}: {share:.0%} of the annotated pixels are membrane, far more than membrane covers in EM "
        f"(usually 10-30%). If you erased parts of it with gray {membrane_grays}, the "
        f"mapping ({mapping.describe()}) reads the erased pixels as membrane and training would learn them: erase "
        f"with a gray the mapping does not use, e.g. {erase}, and read it as not annotated with "
        f"--mapping {mapping.with_unannotated([erase]).text()} (user guide: \"Partial labels from ISBI-style files\"). "
        "If the section really is mostly membrane, ignore this"
    )
