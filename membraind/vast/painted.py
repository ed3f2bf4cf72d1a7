"""Ground truth painted in a VAST segmentation layer, found where it is painted.

A user paints a little in VAST's segmentation layer: segments named ``membrane`` and
``interior`` (or cells, one segment each). membraind finds the painted regions itself
(VAST's segment bounding boxes, then the voxels), reads them at the mip the network
learns at, and treats everything unpainted as not annotated. No box is typed by hand.

:class:`VastGroundTruth` names such a layer (a train, finetune or evaluate job's source);
:func:`survey_painted` measures how much is painted (the loop's trigger) and
:func:`read_painted` reads it as training images with a :class:`GroundTruthRecord`,
which the bundle keeps as the version's lineage.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from membraind.errors import InputError
from membraind.groundtruth.classes import CLASS_NAMES, UNANNOTATED

from membraind.strict import StrictModel
from membraind.vast.paths import PathMap
from membraind.vast.protocol import DEFAULT_PORT
from membraind.volumes.box import Box

if TYPE_CHECKING:
    from membraind.groundtruth.pairs import GroundTruthImage
    from membraind.groundtruth.training_data import TrainingData
    from membraind.vast.client import VastClient
    from membraind.vast.layouts import Segment

__all__ = [
    "VastGroundTruth", "PaintedClasses", "PaintedSurvey", "GroundTruthRecord", "DEFAULT_CLASS_SEGMENTS", "survey_painted", "read_painted",
    "merge_boxes", "class_of_segment", "SURVEY_VOXELS", "painted_training_data", "read_painted_from",
]  # fmt: skip

#: Which segment names mean which class, by default (a segment also counts as the class of
#: a folder segment above it in VAST's segment tree).
DEFAULT_CLASS_SEGMENTS: dict[str, list[str]] = {"membrane": ["membrane"], "interior": ["interior"]}
#: Label value of each class name a source's ``classes`` may use.
CLASS_VALUES = {name: value for value, name in CLASS_NAMES.items() if value != UNANNOTATED}


class PaintedClasses(StrictModel):
    """How the painted segments are read: by their names as classes, or as cells. Shared by
    a painted ground truth source and the daemon's ``[[service.vast]]``, which makes one."""

    convention: Literal["names", "instances"] = Field(
        "names", description="names: segments are classes by their names (see classes); instances: each segment is a cell"
    )
    classes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CLASS_SEGMENTS.items()},
        description="class name -> the segment names that paint it (case-insensitive; a folder's children too)",
    )

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = [name for name in value if name not in CLASS_VALUES]
        if unknown:
            raise ValueError(f"classes: {', '.join(map(repr, unknown))} is no class; use {', '.join(CLASS_VALUES)}")
        return value


class VastGroundTruth(PaintedClasses):
    """Ground truth painted in a segmentation layer of a running VAST, with its EM layer."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    em_layer: int | str = Field(0, description="EM layer: number (0-based) or name")
    segmentation_layer: int | str = Field("segmentation", description="the painted segmentation layer: number or name")
    mip: int = Field(0, ge=0, description="mip the EM and the painting are read at, and the network learns at")
    paths: list[PathMap] = Field(
        default_factory=list, description="where that VAST sees the daemon's folders (default: its [[service.vast]])"
    )

    def describe(self) -> str:
        """``vast://host:port layer <segmentation_layer> (mip M)``, for messages and records."""
        return f"vast://{self.host}:{self.port} layer {self.segmentation_layer!r} (mip {self.mip})"


class PaintedSurvey(StrictModel):
    """How much is painted in a segmentation layer now (cheap to take; the loop polls it)."""

    voxels: int = Field(ge=0, description="painted voxels, in mip-0 voxels")
    boxes: list[Box] = Field(default_factory=list, description="mip-0 boxes around the painted regions")
    fingerprint: str = Field("", description="changes whenever the painting changes (for the quiet-time wait)")


class GroundTruthRecord(StrictModel):
    """What ground truth a version learned from: kept in its bundle (lineage)."""

    source: str = Field(description="where it was read, e.g. vast://127.0.0.1:22081 layer 'segmentation' (mip 0)")
    read_at: str = Field(description="ISO 8601 time it was read")
    painted_voxels: int = Field(ge=0, description="painted mip-0 voxels when read (the survey's count)")
    voxels_per_class: dict[str, int] = Field(default_factory=dict, description="annotated voxels per class, at the mip read")
    boxes: list[Box] = Field(default_factory=list, description="the regions read (mip-0 boxes)")


def survey_painted(client: "VastClient", source: VastGroundTruth) -> PaintedSurvey:
    """How much of ``source``'s layer is painted now: mip-0 voxels, boxes, fingerprint.

    Cheap on big volumes: the segment table gives the painted regions (VAST keeps each
    segment's box); only the voxels inside them are read, at mip 0 while they hold at
    most :data:`SURVEY_VOXELS` voxels, else at the finest mip where they do (each voxel
    there counting for the mip-0 voxels it stands for). The same painting is always
    counted the same way.
    """
    return _survey(client, client.layer_number(source.segmentation_layer))[0]


def read_painted(client: "VastClient", source: VastGroundTruth) -> tuple[list["GroundTruthImage"], GroundTruthRecord]:
    """The painted regions of ``source`` as training images, and the record of what was read.

    EM and painting are read at ``source.mip`` inside the painted boxes; every section
    holding paint becomes one image named by where it lies (``vast-z5-x100-y40-mip0``).
    Unpainted voxels are not annotated. ``convention="names"``: a segment is the class
    whose segment names (``source.classes``) hold its name or a name of a folder above
    it; a painted segment matching none is an error naming it. ``"instances"``: each
    segment is a cell; membranes are drawn where cells meet, never along unpainted area.
    """
    from membraind.groundtruth.instances import instances_to_membrane
    from membraind.groundtruth.pairs import GroundTruthImage
    from membraind.vast.groundtruth import read_sections, section_name

    seg_layer = client.layer_number(source.segmentation_layer)
    survey, segments = _survey(client, seg_layer)
    if not survey.voxels:
        raise InputError(
            f"nothing is painted in {source.describe()}: paint a little in that segmentation layer "
            f"({_how_to_paint(source)}), then submit again"
        )
    lookup = _class_lookup(segments, source) if source.convention == "names" else None
    width, height, depth = client.info().size
    bounds = Box(x0=0, x1=width >> source.mip, y0=0, y1=height >> source.mip, z0=0, z1=depth, mip=source.mip)
    images, per_class, unmatched = [], Counter(), set()
    for painted in survey.boxes:
        region = painted.at_mip(source.mip).intersect(bounds)
        if region.empty:
            continue
        for z, em, ids in read_sections(client, source.em_layer, seg_layer, region):
            if not ids.any():
                continue
            if lookup is None:
                labels = instances_to_membrane(ids, MEMBRANE_THICKNESS, sparse=True)
            else:
                known = np.minimum(ids, lookup.size - 1)  # ids past the table: no class (the table grows as VAST paints)
                labels = np.where(ids < lookup.size, lookup[known], 0).astype(np.uint8)
                unmatched.update(int(i) for i in np.unique(ids[(labels == UNANNOTATED) & (ids != 0)]))
            for value, count in zip(*np.unique(labels[labels != UNANNOTATED], return_counts=True)):
                per_class[CLASS_NAMES[int(value)]] += int(count)
            images.append(GroundTruthImage(name=section_name(z, region), em=em, labels=labels,
                                           labels_from=f"{source.describe()}, section {z}"))  # fmt: skip
    if unmatched:
        raise InputError(_unmatched_message(unmatched, segments, source))
    record = GroundTruthRecord(
        source=source.describe(), read_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        painted_voxels=survey.voxels, voxels_per_class=dict(sorted(per_class.items())), boxes=survey.boxes,
    )  # fmt: skip
    return images, record


def read_painted_from(source: VastGroundTruth) -> tuple[list["GroundTruthImage"], GroundTruthRecord, tuple[float, float, float]]:
    """:func:`read_painted` over a connection of its own to the VAST ``source`` names; also
    the voxel size (nm) at ``source.mip`` (VAST's mip-0 voxel size, x and y times 2**mip)."""
    from membraind.vast.client import VastClient

    with VastClient(source.host, source.port) as client:
        images, record = read_painted(client, source)
        x, y, z = client.info().voxel_size
    return images, record, (x * 2**source.mip, y * 2**source.mip, z)


def painted_training_data(source: VastGroundTruth, validation_fraction: float) -> "TrainingData":
    """Training data from the painting in ``source``: images, a validation part held out, the
    mip and voxel size they were read at, and the record of what was painted."""
    from membraind.groundtruth.training_data import TrainingData, split_validation

    images, record, voxel_size = read_painted_from(source)
    train, validation = split_validation(images, validation_fraction)
    return TrainingData(train, validation, mip=source.mip, voxel_size=voxel_size, ground_truth=record)


#: A survey reads the painted boxes at mip 0 while they hold at most this many voxels.
SURVEY_VOXELS = 1 << 24
#: Width in pixels of the membranes drawn between painted cells (convention instances).
MEMBRANE_THICKNESS = 3


def _survey(client: "VastClient", seg_layer: int) -> tuple[PaintedSurvey, dict[int, "Segment"]]:
    """The survey of segmentation layer ``seg_layer``, and its segment table."""
    segments = client.segments(seg_layer)
    boxes = merge_boxes([box for seg in segments.values() if (box := seg.box()) is not None])
    digest = hashlib.blake2b(digest_size=16)
    for seg in sorted(segments.values(), key=lambda s: s.id):  # names and tree: renaming changes the classes
        digest.update(seg.model_dump_json().encode())
    width, height, _ = client.info().size
    mips = max(1, client.info().mips)
    mip = next((m for m in range(mips) if sum(b.at_mip(m).voxels for b in boxes) <= SURVEY_VOXELS), mips - 1)
    voxels = 0
    with client.api_layer(seg_layer):
        for box in boxes:
            region = box.at_mip(mip)
            region = region.model_copy(update={"x1": min(region.x1, width >> mip), "y1": min(region.y1, height >> mip)})
            if region.empty:
                continue
            ids = client.read_segmentation(region)
            voxels += int(np.count_nonzero(ids)) << (2 * mip)  # a mip-m voxel stands for 4**m mip-0 voxels
            digest.update(repr(region).encode() + np.ascontiguousarray(ids).tobytes())
    return PaintedSurvey(voxels=voxels, boxes=boxes, fingerprint=digest.hexdigest()), segments


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """``boxes`` with every overlapping or touching pair replaced by the box around both, sorted."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a.x0 <= b.x1 and b.x0 <= a.x1 and a.y0 <= b.y1 and b.y0 <= a.y1 and a.z0 <= b.z1 and b.z0 <= a.z1:
                    merged[i] = Box(x0=min(a.x0, b.x0), x1=max(a.x1, b.x1), y0=min(a.y0, b.y0), y1=max(a.y1, b.y1),
                                    z0=min(a.z0, b.z0), z1=max(a.z1, b.z1), mip=a.mip)  # fmt: skip
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return sorted(merged, key=lambda b: (b.z0, b.y0, b.x0))


def class_of_segment(segment: int, segments: dict[int, "Segment"], source: VastGroundTruth) -> int:
    """The class (label value) segment ``segment`` paints: that of its own name or, failing
    that, of the nearest folder above it; 0 when none names a class."""
    names = {name.strip().lower(): CLASS_VALUES[cls] for cls, listed in source.classes.items() for name in listed}
    seen = set()
    while segment in segments and segment not in seen:
        seen.add(segment)
        found = names.get(segments[segment].name.strip().lower())
        if found is not None:
            return found
        segment = segments[segment].parent
    return UNANNOTATED


def _class_lookup(segments: dict[int, "Segment"], source: VastGroundTruth) -> np.ndarray:
    """Label value per segment id (index), 0 for the background and unnamed segments."""
    lookup = np.zeros(max(segments, default=0) + 1, np.uint8)
    for segment in segments:
        lookup[segment] = class_of_segment(segment, segments, source)
    return lookup


def _how_to_paint(source: VastGroundTruth) -> str:
    if source.convention == "instances":
        return "each cell its own segment"
    return "; ".join(f"{cls}: a segment named {' or '.join(map(repr, names))}" for cls, names in source.classes.items())


def _unmatched_message(unmatched: set[int], segments: dict[int, "Segment"], source: VastGroundTruth) -> str:
    listed = ", ".join(
        f"{i} {segments[i].name!r}" if i in segments else f"{i} (not in the segment table)" for i in sorted(unmatched)[:10]
    )
    more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
    return (
        f"{source.describe()}: painted segment(s) {listed}{more} name no class. Rename each in VAST "
        f"({_how_to_paint(source)}), or move it into a folder segment named after its class "
        f"(e.g. {' or '.join(repr(c) for c in source.classes)}); if each segment is a cell, use convention "
        "'instances' (--convention instances)"
    )
