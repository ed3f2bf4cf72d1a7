"""Ground truth painted in VAST: EM and a segmentation layer of a box, as training images."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from membraind.groundtruth.classes import write_label_image
from membraind.groundtruth.instances import instances_to_membrane
from membraind.errors import InputError
from membraind.groundtruth.label_mapping import LabelMapping, UnmappedLabelValues
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.vast.client import VastClient
from membraind.vast.volume import VastVolume
from membraind.volumes.box import Box
from membraind.volumes.gray import as_gray
from membraind.volumes.image_files import write_image

__all__ = ["ground_truth_from_vast", "export_ground_truth", "read_sections", "section_name"]


def ground_truth_from_vast(
    client: VastClient,
    em_layer: int | str,
    segmentation_layer: int | str,
    box: Box,
    *,
    convention: Literal["classes", "instances"] = "classes",
    mapping: LabelMapping | None = None,
    membrane_thickness: int = 3,
) -> list[GroundTruthImage]:
    """One training image per section of ``box``.

    ``convention="classes"``: segment ids are classes (mEMbrain's way: paint interior as
    one segment, membrane as another), turned into classes by ``mapping`` (default: id =
    class, 0 = not annotated). ``"instances"``: every cell is its own segment; membranes
    are drawn ``membrane_thickness`` pixels wide where two segments meet; unpainted
    pixels, and a cell's edge towards them, stay unannotated (no false membrane around
    a few cells painted in a sea of unpainted voxels).
    """
    mapping = mapping or LabelMapping()
    images = []
    for z, em_section, id_section in read_sections(client, em_layer, segmentation_layer, box):
        if convention == "instances":
            labels = instances_to_membrane(id_section, membrane_thickness, sparse=True)
        else:
            labels = _classes(mapping, id_section, f"VAST layer {segmentation_layer}, section {z}")
        images.append(GroundTruthImage(name=section_name(z, box), em=em_section, labels=labels))
    return images


def read_sections(
    client: VastClient, em_layer: int | str, segmentation_layer: int | str, box: Box
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(z, EM, segment ids)`` of each section of ``box`` (at ``box.mip``): 8-bit gray EM from
    ``em_layer`` and the uint16 ids of ``segmentation_layer``."""
    em = as_gray(VastVolume(client, em_layer)).read(box)
    with client.api_layer(client.layer_number(segmentation_layer)):
        ids = client.read_segmentation(box)
    for z, (em_section, id_section) in enumerate(zip(em, ids), start=box.z0):
        yield z, np.asarray(em_section), id_section


def section_name(z: int, box: Box) -> str:
    """The name of section ``z`` of ``box`` as a training image: where it lies in VAST."""
    return f"vast-z{z}-x{box.x0}-y{box.y0}-mip{box.mip}"


def _classes(mapping: LabelMapping, ids: np.ndarray, where: str) -> np.ndarray:
    """Segment ids read as classes; ids the mapping does not name are most often cells
    painted one segment each, which the other convention reads."""
    try:
        return mapping.apply(ids, where)
    except UnmappedLabelValues as exc:
        raise InputError(
            f"{exc.problem}: with --convention classes (the default) segment ids are classes "
            f"({mapping.meaning()}). If each cell is its own segment (as vast-paint --mode cells paints them), "
            "read the layer with --convention instances: membranes are then drawn where cells meet"
        ) from None


def export_ground_truth(images: list[GroundTruthImage], out: Path) -> tuple[Path, Path]:
    """Write ``images`` as ``out/em/<name>.png`` and ``out/labels/<name>.png`` (class values,
    shown in colour by viewers: :func:`write_label_image`),
    the folders ``membraind train --em ... --labels ... --mapping classes`` reads."""
    em_dir, label_dir = Path(out) / "em", Path(out) / "labels"
    for image in images:
        write_image(em_dir / f"{image.name}.png", image.em)
        write_label_image(label_dir / f"{image.name}.png", image.labels)
    return em_dir, label_dir
