"""Segmenting a membrane-probability volume section by section into VAST tiles and a label TIFF.

Output folder layout::

    <out>/segmentation/     VAST tile store (RGB-encoded ids) + its .vsvi
    <out>/labels.tif        uint32 label stack, one page per section (for other tools)
    <out>/preview/          section_<z>.png: each cell in its own colour over the EM, to look at
    <out>/segment2d.json    what was segmented, with which settings, and each section's ids

Ids are unique across the whole volume: section ``z`` gets the ids
``first .. first + count - 1`` recorded in the manifest, numbered after the previous
sections'. The manifest is rewritten after every section, so an interrupted run resumes
at the first unfinished section with the same numbering.

A ``box`` limits the work to that part of the volume (e.g. the box or anchor cubes a
prediction covered): only its sections are segmented, each only inside the box; the
rest of the store stays empty (0, boundary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from pydantic import ValidationError

from membraind_client.progress import Progress, ProgressReporter

from membraind.atomic import write_text_atomic
from membraind.errors import Cancelled, InputError, describe_validation_error
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.segment.instances import as_probability, segment_section
from membraind.segment.label_tiff import write_label_sections
from membraind.segment.preview import PREVIEW_DIR, write_segmentation_preview
from membraind.segment.settings import Segment2DSettings
from membraind.strict import StrictModel
from membraind.volumes.gray import as_gray
from membraind.volumes.open_volume import open_volume
from membraind.volumes.box import Box
from membraind.volumes.tile_store import MAX_RGB_ID, TileStore
from membraind.volumes.volume import Volume

__all__ = ["SegmentationCancelled", "SegmentationReport", "run_segmentation", "MANIFEST_NAME", "STORE_NAME"]

MANIFEST_NAME = "segment2d.json"
STORE_NAME = "segmentation"
TIFF_NAME = "labels.tif"
MANIFEST_FORMAT = 1

class SegmentationCancelled(Cancelled):
    """Raised when a segmentation is cancelled; finished sections stay written."""


class SectionIds(StrictModel):
    """The ids one section received: ``first .. first + count - 1``."""

    first: int
    count: int


class SegmentationManifest(StrictModel):
    """``segment2d.json``: the inputs of a segmentation and the sections finished so far."""

    format: int = MANIFEST_FORMAT
    source: str
    mip: int
    shape: tuple[int, int, int]
    settings: Segment2DSettings
    box: Box | None = None  # the part segmented, at ``mip`` (None: whole sections)
    sections: dict[int, SectionIds] = {}

    def next_id(self) -> int:
        """The first id not used by any finished section."""
        return max((s.first + s.count for s in self.sections.values()), default=1)


@dataclass
class SegmentationReport:
    """What a segmentation did."""

    sections: int = 0
    skipped: int = 0
    segments: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    preview: Path | None = None
    region: Box | None = None  # what this run covers, at the segmented mip (z: its sections)
    ids: dict[int, SectionIds] = field(default_factory=dict)  # the ids of each section in ``region``
    store: TileStore | None = None  # the ids, level 0 at the segmented mip

    def summary(self) -> str:
        """One line for people."""
        look = f"; see the cells in {self.preview}/section_<z>.png" if self.preview else ""
        return (
            f"{self.sections} sections segmented, {self.skipped} already done, "
            f"{self.segments} segments in all, {self.seconds:.1f} s{look}"
        )


def run_segmentation(
    membrane: Path,
    out: Path,
    settings: Segment2DSettings,
    *,
    mip: int | None = None,
    sections: range | None = None,
    box: Box | None = None,
    overwrite: bool = False,
    label_tiff: bool = True,
    em: Path | None = None,
    preview: bool = True,
    progress: ProgressReporter | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SegmentationReport:
    """Segment the sections of the membrane-probability volume at ``membrane`` (membrane
    high, 8-bit or float in [0, 1]) at ``mip`` into ``out`` (see the module docstring).
    Without ``mip``, the first level holding data: a layer predicted at mip M is segmented there.

    ``preview`` writes each segmented section's picture into ``out/preview/``, over ``em``
    (the EM the membrane was predicted from, same size at ``mip``) or, without it, over
    the inverted membrane probability (membrane dark, as in EM).

    ``sections`` limits the work to some sections (default all), ``box`` (any mip) to a part
    of the volume, its sections only inside it (not both). Sections already in the
    manifest are skipped unless ``overwrite``; a manifest written with other settings, mip
    or source is an error unless ``overwrite``, which starts the folder over.
    """
    started, report, out = time.monotonic(), SegmentationReport(), Path(out)
    volume = as_gray(open_volume(membrane))
    em_volume = None
    try:
        mip = volume.first_mip if mip is None else mip
        if not 0 <= mip < volume.mips:
            raise InputError(f"{volume.name} has mip levels 0-{volume.mips - 1}; mip {mip} was asked for")
        shape = volume.shape_at(mip)
        if preview and em is not None:
            em_volume = _open_em(em, mip, shape, membrane)
        region = _region(box, volume.bounds(mip), membrane) if box is not None else None
        todo = range(region.z0, region.z1) if region is not None else _sections(sections, shape[0], membrane)
        manifest = _open_manifest(out, membrane, mip, shape, settings, region, overwrite)
        store = _store(out, volume, mip)
        report.region = region or volume.bounds(mip).model_copy(update={"z0": todo.start, "z1": todo.stop})
        for done, z in enumerate(todo):
            if cancel is not None and cancel():
                raise SegmentationCancelled(
                    f"segmentation cancelled after {report.sections} sections; run it again to resume"
                )
            if z in manifest.sections:
                report.skipped += 1
                continue
            first = manifest.next_id()
            crop = report.region.section(z)
            section = volume.read(crop)[0]
            ids, count = _segment(section, z, settings, first)
            in_store = crop.model_copy(update={"mip": 0})  # the store's level 0 is the segmented mip
            store.write_region(in_store, ids[None])
            if store.max_mip >= 1:
                store.build_pyramid(range(z, z + 1), region=in_store)
            if preview:  # before the manifest marks the section done, so a resumed run is complete
                write_segmentation_preview(out, z, _background(em_volume, section, crop), ids, em_volume is not None)
            manifest.sections[z] = SectionIds(first=first, count=count)
            write_text_atomic(out / MANIFEST_NAME, manifest.model_dump_json(indent=2))
            report.sections += 1
            if progress is not None:
                progress(Progress(phase="segmenting", fraction=(done + 1) / len(todo), current=done + 1, total=len(todo),
                                  unit="section", message=f"section {z}: {count} segments", milestone=True))  # fmt: skip
        report.segments = sum(s.count for s in manifest.sections.values())
        report.ids = {z: manifest.sections[z] for z in todo if z in manifest.sections}
        report.store = store
        report.outputs.append(store.write_vsvi())
        if label_tiff:
            tiff = out / TIFF_NAME
            # The manifest changes with every finished section: a newer stack is already complete.
            if not tiff.exists() or tiff.stat().st_mtime <= (out / MANIFEST_NAME).stat().st_mtime:
                _write_tiff(tiff, store, manifest)
            report.outputs.append(tiff)
        if preview:
            report.preview = out / PREVIEW_DIR
            report.outputs.append(report.preview)
    finally:
        volume.close()
        if em_volume is not None:
            em_volume.close()
    report.seconds = time.monotonic() - started
    return report


def _sections(sections: range | None, depth: int, source: Path) -> range:
    if sections is None:
        return range(depth)
    if not (0 <= sections.start and sections.stop <= depth and len(sections)):
        raise InputError(f"sections {sections.start}-{sections.stop - 1} are not within {source}'s 0-{depth - 1}")
    return sections


def _region(box: Box, bounds: Box, source: Path) -> Box:
    """``box`` at the segmented mip, inside the volume; an error when nothing of it is."""
    region = box.at_mip(bounds.mip).intersect(bounds)
    if region.empty:
        raise InputError(f"box {box} lies outside {source} ({bounds.at_mip(box.mip)}); give a box inside the volume")
    return region


def _open_manifest(
    out: Path, source: Path, mip: int, shape: tuple[int, int, int], settings: Segment2DSettings, box: Box | None,
    overwrite: bool,
) -> SegmentationManifest:
    fresh = SegmentationManifest(source=str(Path(source).resolve()), mip=mip, shape=shape, settings=settings, box=box)
    path = out / MANIFEST_NAME
    if overwrite or not path.exists():
        return fresh
    try:
        old = SegmentationManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"{path} cannot be read ({detail}); delete it, or pass --overwrite to start over") from None
    differs = [name for name in ("source", "mip", "shape", "settings", "box") if getattr(old, name) != getattr(fresh, name)]
    if differs:
        raise InputError(
            f"{out} holds a segmentation whose {', '.join(differs)} differ from this run's; "
            "pass --overwrite to replace it, or choose another output folder"
        )
    return old


def _store(out: Path, volume: Volume, mip: int) -> TileStore:
    # The segmented mip is the store's first level, framed at mip 0 as predicted layers are.
    name = out.resolve().name + (f" mip{mip}" if mip else "")  # the layer is named after the folder
    return TileStore(
        out / STORE_NAME, volume.shape_at(mip), volume.voxel_size, 3, name, kind="segmentation", base_mip=mip,
        full_shape=volume.shape,
    )  # fmt: skip


def _open_em(em: Path, mip: int, shape: tuple[int, int, int], membrane: Path) -> Volume:
    """The EM volume for the previews, checked to match the membrane volume at ``mip``."""
    volume = as_gray(open_volume(em))
    em_shape = volume.shape_at(mip) if mip < volume.mips else None
    if em_shape != shape:
        volume.close()
        found = f"{em_shape[2]}x{em_shape[1]} px x {em_shape[0]} sections" if em_shape else f"no mip {mip}"
        raise InputError(
            f"EM {em} has {found} at mip {mip}, but the membrane probability {membrane} has "
            f"{shape[2]}x{shape[1]} px x {shape[0]} sections; give the EM the membrane was predicted from (--em, or a request's \"em\")"
        )
    return volume


def _background(em: Volume | None, membrane: np.ndarray, crop: Box) -> np.ndarray:
    """What the preview of the section part ``crop`` is drawn on, in [0, 1]: the EM stretched
    as the network sees it, or the membrane probability inverted so that membrane is dark."""
    if em is None:
        return 1.0 - as_probability(membrane)
    return IntensityNormalization().normalize_section(em.read(crop)[0])


def _segment(section: np.ndarray, z: int, settings: Segment2DSettings, first: int) -> tuple[np.ndarray, int]:
    """Ids of section ``z`` (its membrane probability ``section``) numbered from ``first``
    (0 stays boundary), and how many there are."""
    ids = segment_section(section, settings).astype(np.int64)
    count = int(ids.max(initial=0))  # segment_section numbers its cells 1..count
    ids[ids > 0] += first - 1
    if ids.max(initial=0) > MAX_RGB_ID:
        raise InputError(
            f"section {z} would need segment ids above {MAX_RGB_ID}, the most a VAST RGB segmentation layer holds; "
            "segment fewer sections per output folder (--sections), or raise min_size/h to make fewer segments"
        )
    return ids, count


def _write_tiff(path: Path, store: TileStore, manifest: SegmentationManifest) -> Path:
    depth, height, width = store.shape

    def sections() -> Iterator[np.ndarray]:
        for z in range(depth):
            # Unsegmented sections are written as all boundary, so pages match section numbers.
            if z in manifest.sections:
                yield store.read_region(store.bounds(0).section(z))[0]
            else:
                yield np.zeros((height, width), np.uint32)

    return write_label_sections(path, sections())
