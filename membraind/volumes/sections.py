"""Named 2D sections from a folder of image files or from a multi-page TIFF stack.

A section's name is what pairs it with its label: the file's stem for folders, the page
number for stacks. Sections load lazily so that listing a large folder costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from membraind.errors import InputError
from membraind.volumes.image_files import TIFF_SUFFIXES, is_image_path, read_image


@dataclass(frozen=True)
class Section:
    """One 2D section of a source: a file in a folder, or a page of a TIFF stack."""

    name: str
    path: Path
    page: int | None = None

    @property
    def where(self) -> str:
        """Human-readable location, for messages."""
        return str(self.path) if self.page is None else f"{self.path} (page {self.page})"

    def read(self) -> np.ndarray:
        """Load the section's pixels."""
        if self.page is None:
            return read_image(self.path)
        try:
            with tifffile.TiffFile(self.path) as tif:
                return tif.pages[self.page].asarray()
        except Exception as exc:
            raise InputError(f"cannot read {self.where} ({type(exc).__name__}: {exc})") from exc


def natural_key(name: str) -> list:
    """Sort key under which 'img2' comes before 'img10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_sections(path: Path, role: str = "image") -> list[Section]:
    """The sections of a folder of PNG/TIFF files or of a multi-page TIFF, in natural order.

    ``role`` (e.g. "EM", "label") only words the error messages. A folder holding files
    that are not images is an error: nothing a user put there is silently skipped.
    """
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        strangers = sorted(p.name for p in files if not is_image_path(p))
        if strangers:
            shown = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
            raise InputError(
                f"{role} folder {path} holds files that are not PNG or TIFF images: {shown}; "
                "move them out of the folder"
            )
        sections = [Section(p.stem, p) for p in files]
        if not sections:
            raise InputError(f"{role} folder {path} holds no PNG or TIFF images")
        stems = [s.name for s in sections]
        if len(set(stems)) != len(stems):
            dup = sorted({s for s in stems if stems.count(s) > 1})
            raise InputError(f"{role} folder {path} has several files named {dup[0]} with different suffixes; keep one")
        return sorted(sections, key=lambda s: natural_key(s.name))
    if path.is_file() and path.suffix.lower() in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                pages = len(tif.pages)
        except Exception as exc:
            raise InputError(f"cannot read {role} stack {path} as TIFF ({type(exc).__name__}: {exc})") from exc
        return [Section(f"{i:04d}", path, i) for i in range(pages)]
    if path.is_file():
        return [Section(path.stem, path)]
    raise InputError(f"{role} path {path} does not exist (expected a folder of PNG/TIFF files or a TIFF stack)")
