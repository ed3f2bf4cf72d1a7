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

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from membraind.strict import StrictModel
from membraind.vast.paths import PathMap
from membraind.vast.protocol import DEFAULT_PORT
from membraind.volumes.box import Box

if TYPE_CHECKING:
    from membraind.groundtruth.pairs import GroundTruthImage
    from membraind.vast.client import VastClient

__all__ = [
    "VastGroundTruth", "PaintedSurvey", "GroundTruthRecord", "DEFAULT_CLASS_SEGMENTS", "survey_painted", "read_painted",
]  # fmt: skip

#: Which segment names mean which class, by default (a segment also counts as the class of
#: a folder segment above it in VAST's segment tree).
DEFAULT_CLASS_SEGMENTS: dict[str, list[str]] = {"membrane": ["membrane"], "interior": ["interior"]}


class VastGroundTruth(StrictModel):
    """Ground truth painted in a segmentation layer of a running VAST, with its EM layer."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    em_layer: int | str = Field(0, description="EM layer: number (0-based) or name")
    segmentation_layer: int | str = Field("segmentation", description="the painted segmentation layer: number or name")
    mip: int = Field(0, ge=0, description="mip the EM and the painting are read at, and the network learns at")
    convention: Literal["names", "instances"] = Field(
        "names", description="names: segments are classes by their names (see classes); instances: each segment is a cell"
    )
    classes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CLASS_SEGMENTS.items()},
        description="class name -> the segment names that paint it (case-insensitive; a folder's children too)",
    )
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
    """How much of ``source``'s layer is painted now (to be written: issue 18 item 2)."""
    raise NotImplementedError


def read_painted(client: "VastClient", source: VastGroundTruth) -> tuple[list["GroundTruthImage"], GroundTruthRecord]:
    """The painted regions of ``source`` as training images (EM and classes, unpainted = not
    annotated, at ``source.mip``) and the record of what was read (to be written: issue 18 item 2)."""
    raise NotImplementedError
