"""Voxel sizes: how users write them, and reading the one a TIFF file records.

A voxel size is ``(x, y, z)`` in nanometres everywhere in membraind (requests, bundles,
``.vsvi`` files, VAST). Users write it as ``4,4,30`` (also ``4x4x30``), or as one number
for cubic voxels (``8`` is 8 x 8 x 8 nm); :func:`parse_voxel_size` reads every form, for
the command line and for request files alike (the pydantic type :data:`VoxelSizeNm`).

TIFF files record a pixel size in their resolution tags (pixels per inch, centimetre,
millimetre or micrometre), or in ImageJ's description (``unit=micron`` with the
resolution in pixels per unit, and ``spacing`` for z). When only x and y are recorded,
the voxel is taken to be cubic (z = x), the same rule as for a single number.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import tifffile
from pydantic import BeforeValidator

from membraind.volumes.image_files import TIFF_SUFFIXES
from membraind.volumes.sections import Section, list_sections

__all__ = [
    "VoxelSize", "VoxelSizeNm", "UNKNOWN", "PRINT_RESOLUTION_NM", "parse_voxel_size", "describe_voxel_size",
    "tiff_voxel_size", "section_voxel_size", "recorded_voxel_size",
]  # fmt: skip

VoxelSize = tuple[float, float, float]

#: What stands for an unknown voxel size: written by membraind before it read voxel sizes,
#: and the value VAST and ``.vsvi`` files fall back to. Found in a source, it counts as
#: "not recorded".
UNKNOWN: VoxelSize = (1.0, 1.0, 1.0)

#: Pixels larger than this (1 um) come from a print resolution (72 or 300 dpi written by an
#: image editor), not from a microscope, and are ignored.
PRINT_RESOLUTION_NM = 1000.0

_FORMS = "X,Y,Z in nm (e.g. 4,4,30) or one number for cubic voxels (e.g. 8)"


def parse_voxel_size(value: object) -> VoxelSize:
    """``(x, y, z)`` nm from ``"4,4,30"``, ``"4x4x30"``, ``"8"``, ``8``, ``[8]`` or ``[4, 4, 30]``.

    One number means cubic voxels. Raises ``ValueError`` saying how to write it.
    """
    if isinstance(value, str):
        parts: list[object] = [p for p in re.split(r"[\s,x×]+", value.strip().lower()) if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        if any(isinstance(p, bool) for p in parts):
            raise ValueError
        numbers = [float(p) for p in parts]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise ValueError(f"a voxel size is {_FORMS}; got {value!r}")
    return (numbers[0], numbers[1], numbers[2])


#: A voxel size field of a request, spec or bundle: any form :func:`parse_voxel_size` reads.
VoxelSizeNm = Annotated[VoxelSize, BeforeValidator(parse_voxel_size)]


def describe_voxel_size(size: VoxelSize) -> str:
    """``4 x 4 x 30 nm``."""
    return " x ".join(f"{v:g}" for v in size) + " nm"


_RESUNIT_NM = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}  # inch, cm, and tifffile's mm and um
_IMAGEJ_UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3,
    "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6, "cm": 1e7, "inch": 2.54e7,
}  # fmt: skip


def _per_pixel(resolution: object, unit_nm: float) -> float | None:
    """nm per pixel from a TIFF rational (pixels per unit)."""
    try:
        numerator, denominator = resolution  # type: ignore[misc]
        pixels_per_unit = numerator / denominator
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return unit_nm / pixels_per_unit if pixels_per_unit > 0 else None


def tiff_voxel_size(path: Path, page: int = 0) -> tuple[VoxelSize, str] | None:
    """The voxel size ``path`` records (its page ``page``), with where it was found; None when
    it records none (no unit, or a print resolution above :data:`PRINT_RESOLUTION_NM`).
    Without ImageJ's ``spacing``, z is x."""
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[page].tags
            imagej = tif.imagej_metadata or {}
            x_res = tags["XResolution"].value if "XResolution" in tags else None
            y_res = tags["YResolution"].value if "YResolution" in tags else x_res
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2  # TIFF's default: inch
    except Exception:  # unreadable files are reported by the reader that needs their pixels
        return None
    name = str(imagej.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
    unit_nm = _RESUNIT_NM.get(unit) or _IMAGEJ_UNIT_NM.get(name)
    if unit_nm is None or x_res is None:
        return None
    x, y = _per_pixel(x_res, unit_nm), _per_pixel(y_res, unit_nm)
    if x is None or y is None or max(x, y) > PRINT_RESOLUTION_NM:
        return None
    spacing = imagej.get("spacing")
    z_unit = _IMAGEJ_UNIT_NM.get(name)
    z = float(spacing) * z_unit if isinstance(spacing, (int, float)) and spacing > 0 and z_unit else x
    return (x, y, z), f"the resolution tags of {path}"


def section_voxel_size(section: Section) -> tuple[VoxelSize, str] | None:
    """The voxel size a TIFF section records (a file, or a page of a stack); None for PNG."""
    if section.path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    return tiff_voxel_size(section.path, section.page or 0)


def recorded_voxel_size(path: Path) -> tuple[VoxelSize, str] | None:
    """The voxel size the first section of a folder of sections or a TIFF stack records."""
    return section_voxel_size(list_sections(Path(path), "EM")[0])
