"""Reading and writing single image files (PNG, TIFF) and multi-page TIFF stacks.

Every reader turns a failure into an :class:`~membraind.errors.InputError` that names
the file; every writer writes to a temporary name in the same folder and renames it
into place, so a reader never sees half a file (docs/design-notes.md, "Idempotent
outputs").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from membraind.atomic import atomic_path
from membraind.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")

# Large EM sections are legitimate input; Pillow's decompression-bomb guard is not
# meant for them.
Image.MAX_IMAGE_PIXELS = None


def is_image_path(path: Path) -> bool:
    """True when ``path`` has a suffix membraind reads as an image."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """Read one 2D image: ``(H, W)`` for gray, ``(H, W, C)`` for colour.

    Raises :class:`InputError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = tifffile.imread(path)
        else:
            with Image.open(path) as img:
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                array = np.asarray(img)
    except Exception as exc:  # any decoder failure means the same thing to the user
        raise InputError(
            f"cannot read {path} as an image ({type(exc).__name__}: {exc}); "
            "replace it with a PNG or TIFF file or move it out of the folder"
        ) from exc
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]  # alpha carries no EM or label information
    if array.ndim not in (2, 3):
        raise InputError(
            f"{path} has shape {array.shape}; expected one 2D section "
            "(for multi-page TIFF stacks pass the stack itself, not a page folder)"
        )
    return array


def write_image(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as PNG or TIFF (by suffix) atomically: temporary file, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in TIFF_SUFFIXES:
            tifffile.imwrite(tmp, array)
        else:
            Image.fromarray(array).save(tmp, format="PNG")
    return path
