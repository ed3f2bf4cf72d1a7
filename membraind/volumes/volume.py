"""The volume interface every reader implements, and the section-stack reader.

A volume is a 3D grayscale (or colour) image with mip levels: ``shape`` is its mip-0
``(z, y, x)`` size, ``read(box)`` returns the ``(z, y, x)`` array of a box at the box's
mip. Prediction, VAST and the tile store all go through this one interface, so every
prediction mode runs the same against files, tile stores and a live VAST.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from threading import Lock

import numpy as np

from membraind.errors import InputError
from membraind.volumes.box import Box, size_at_mip
from membraind.volumes.mips import downsample
from membraind.volumes.sections import Section, list_sections
from membraind.volumes.voxel_size import VoxelSize, parse_voxel_size, section_voxel_size

__all__ = ["Volume", "SectionStackVolume"]


class Volume:
    """Base class: a volume with ``shape`` (mip 0, ``(z, y, x)``), ``dtype``, ``voxel_size``
    (nm, ``(x, y, z)``), ``mips`` (number of readable mip levels), ``first_mip`` (the
    first level holding data) and ``read(box)``.

    ``voxel_size_origin`` says where ``voxel_size`` came from (for messages); None when the
    source records none and ``voxel_size`` is the 1 nm placeholder.

    Subclasses implement :meth:`_read` for boxes already checked to lie inside.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype = np.dtype(np.uint8)
    voxel_size: VoxelSize = (1.0, 1.0, 1.0)
    voxel_size_origin: str | None = None
    mips: int = 1
    first_mip: int = 0  # the first mip holding data (a layer predicted at mip M: M)
    channels: int = 1  # 1 gray, 3 RGB
    name: str = "volume"

    def shape_at(self, mip: int) -> tuple[int, int, int]:
        """``(z, y, x)`` size at ``mip``."""
        z, y, x = self.shape
        return (z, size_at_mip(y, mip), size_at_mip(x, mip))

    def bounds(self, mip: int = 0) -> Box:
        """The box covering the whole volume at ``mip``."""
        return Box.from_shape(self.shape_at(mip), mip)

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box`` (at ``box.mip``) as ``(z, y, x)`` (``(z, y, x, 3)`` for RGB)."""
        if not 0 <= box.mip < self.mips:
            raise InputError(f"{self.name} has mip levels 0-{self.mips - 1}; mip {box.mip} was asked for")
        if not self.bounds(box.mip).contains(box):
            raise InputError(f"box {box} lies outside {self.name} ({self.bounds(box.mip)})")
        return self._read(box)

    def _read(self, box: Box) -> np.ndarray:
        raise NotImplementedError

    def mtime(self, box: Box) -> float | None:
        """When the data of ``box`` last changed (seconds since the epoch), None if unknown.

        Prediction skips a tile whose outputs are newer than this.
        """
        return None

    def close(self) -> None:
        """Release files or connections (no-op by default)."""


class SectionStackVolume(Volume):
    """A folder of PNG/TIFF sections (one per z, natural name order) or a multi-page TIFF.

    ``voxel_size`` (nm) overrides the one the first section's TIFF resolution tags record
    (:func:`~membraind.volumes.voxel_size.tiff_voxel_size`); PNG sections record none.

    Mip levels above 0 are computed on read by 2x2 mean pooling, the same rule the
    tile store uses for its pyramid. Decoded sections are kept in a small cache so that
    reading a section tile by tile decodes the file once.
    """

    def __init__(
        self,
        path: Path,
        voxel_size: VoxelSize | None = None,
        mips: int = 8,
        cache_sections: int = 4,
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.sections: list[Section] = list_sections(self.path, "EM")
        first = self.sections[0].read()
        if first.ndim == 3 and first.shape[-1] != 3:
            raise InputError(f"{self.sections[0].where} has {first.shape[-1]} channels; expected gray or RGB")
        self.channels = 1 if first.ndim == 2 else 3
        self.dtype = first.dtype
        self.shape = (len(self.sections), first.shape[0], first.shape[1])
        if voxel_size is not None:
            self.voxel_size, self.voxel_size_origin = parse_voxel_size(voxel_size), "given"
        elif (recorded := section_voxel_size(self.sections[0])) is not None:
            self.voxel_size, self.voxel_size_origin = recorded
        self.mips = mips
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache_sections)
        self._lock = Lock()  # readers in several threads share the cache

    def mtime(self, box: Box) -> float | None:
        """The newest modification time of the section files ``box`` reads."""
        return max(self.sections[z].path.stat().st_mtime for z in range(box.z0, box.z1)) if not box.empty else None

    def _section(self, z: int, mip: int) -> np.ndarray:
        key = (z, mip)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if mip == 0:
            image = self.sections[z].read()
            expected = self.shape[1:] + ((3,) if self.channels == 3 else ())
            if image.shape != expected:
                raise InputError(
                    f"{self.sections[z].where} has shape {image.shape}; the first section has {expected}. "
                    "Every section of a volume must have the same size and type"
                )
        else:
            image = downsample(self._section(z, mip - 1))
        with self._lock:
            self._cache[key] = image
            while len(self._cache) > self._cache_size * self.mips:
                self._cache.popitem(last=False)
        return image

    def _read(self, box: Box) -> np.ndarray:
        planes = [self._section(z, box.mip)[box.y0 : box.y1, box.x0 : box.x1] for z in range(box.z0, box.z1)]
        return np.stack(planes) if planes else np.zeros(box.shape, self.dtype)
