"""Folder-to-folder ground-truth conversions (what the CLI's convert commands run)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from membraind.groundtruth.classes import write_label_image
from membraind.groundtruth.instances import instances_to_membrane
from membraind.groundtruth.label_mapping import LabelMapping, decode_instance_ids
from membraind.groundtruth.skeleton import membrane_to_skeleton
from membraind.volumes.sections import Section, list_sections


def convert_sections(
    source: Path,
    target: Path,
    transform: Callable[[np.ndarray, Section], np.ndarray],
    role: str,
    show_progress: bool = True,
) -> list[Path]:
    """Apply ``transform`` (giving classes 0-3) to every section of ``source``; write
    ``target/<name>.png`` as a label image (:func:`write_label_image`)."""
    sections = list_sections(source, role)
    written = []
    for section in tqdm(sections, desc=f"converting {role}", unit="section", disable=not show_progress):
        written.append(write_label_image(Path(target) / f"{section.name}.png", transform(section.read(), section)))
    return written


def convert_instances(
    source: Path, target: Path, thickness: int = 3, fill_ecs: bool = False, show_progress: bool = True
) -> list[Path]:
    """Instance labels (gray ids or RGB) -> membrane labels (0/1/2) for every section."""

    def transform(raw: np.ndarray, _: Section) -> np.ndarray:
        return instances_to_membrane(decode_instance_ids(raw), thickness, fill_ecs)

    return convert_sections(source, target, transform, "instance label", show_progress)


def convert_skeletons(
    source: Path, target: Path, mapping: LabelMapping, tube_radius: float = 4.0, show_progress: bool = True
) -> list[Path]:
    """Membrane labels -> skeleton labels (0 unannotated, 1 background, 2 backbone)."""

    def transform(raw: np.ndarray, section: Section) -> np.ndarray:
        return membrane_to_skeleton(mapping.apply(raw, section.where), tube_radius)

    return convert_sections(source, target, transform, "membrane label", show_progress)
