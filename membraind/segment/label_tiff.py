"""Segment ids as a 32-bit label TIFF stack (one page per section), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import tifffile

from membraind.atomic import atomic_path
from membraind.errors import InputError

__all__ = ["write_label_tiff", "write_label_sections", "read_label_tiff"]

_UINT32_MAX = int(np.iinfo(np.uint32).max)


def _checked_ids(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label sections must be 2D integer arrays; got {array.dtype} of shape {array.shape}")
    if array.size and (array.min() < 0 or int(array.max()) > _UINT32_MAX):
        raise InputError(f"label ids must lie in 0..{_UINT32_MAX}; got {array.min()}..{array.max()}")
    return array.astype(np.uint32, copy=False)


def write_label_sections(path: Path, sections: Iterable[np.ndarray]) -> Path:
    """Write ``(H, W)`` id sections one page at a time as a uint32 TIFF stack.

    Only one section is held at a time, so a volume larger than memory can be written;
    the file is BigTIFF (no 4 GB limit), zlib-compressed, and appears only when complete.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for section in sections:
            # minisblack: ids, not colours; one page per section for viewers.
            tif.write(_checked_ids(section), photometric="minisblack", compression="zlib")
    return path


def write_label_tiff(path: Path, labels: np.ndarray) -> Path:
    """Write ``(Z, H, W)`` (or one ``(H, W)`` section) of ids as a uint32 TIFF stack."""
    array = np.asarray(labels)
    if array.ndim not in (2, 3):
        raise InputError(f"labels must be a 2D or 3D integer array; got {array.dtype} of shape {array.shape}")
    return write_label_sections(path, array[None] if array.ndim == 2 else array)


def read_label_tiff(path: Path) -> np.ndarray:
    """Read a label TIFF stack as ``(Z, H, W)`` uint32 ids."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label TIFF {path} does not exist")
    try:
        with tifffile.TiffFile(path) as tif:  # page by page: written pages are separate series
            array = np.stack([page.asarray() for page in tif.pages])
    except Exception as exc:  # any decoder failure means the same thing to the user
        raise InputError(f"cannot read {path} as a TIFF stack ({type(exc).__name__}: {exc})") from exc
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.integer) or array.min(initial=0) < 0:
        raise InputError(f"{path} holds {array.dtype} of shape {array.shape}; expected integer label sections")
    return array.astype(np.uint32, copy=False)
