"""Reading and writing single image files (PNG, TIFF) and multi-page TIFF stacks.

Every reader turns a failure into an :class:`~membraind.errors.InputError` that names
the file; every writer writes to a temporary name in the same folder and renames it
into place, so a reader never sees half a file (docs/design-notes.md, "Idempotent
outputs").
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

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
                array = _palette_values(img) if img.mode == "P" else np.asarray(img)
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


def _palette_values(img: Image.Image) -> np.ndarray:
    """The pixels of a palette ("P") image: gray levels when every colour it uses is a
    gray, else the palette indices.

    A gray palette is only a way of storing a gray image (some tools save EM or 0/255
    labels so). A colour palette belongs to a label image (membraind writes its class
    labels so): the index is the class or id, and the colours are only how viewers
    show it. Converting to RGB, as imageio does, would turn class 2 into a colour.
    """
    indices = np.asarray(img)
    palette = np.asarray(img.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    used = np.unique(indices)
    if used.size and used.max() < len(palette):
        colours = palette[used]
        if (colours == colours[:, :1]).all():
            return palette[:, 0][indices]
    return indices


def write_image(
    path: Path, array: np.ndarray, palette: Sequence[tuple[int, int, int]] | None = None, text: dict[str, str] | None = None
) -> Path:
    """Write ``array`` as PNG or TIFF (by suffix) atomically: temporary file, then rename.

    With ``palette`` (RGB colours of the values 0, 1, ...), a uint8 ``array`` is written
    as a palette PNG: the pixel values stay ``array``'s, image viewers show the colours.
    ``text`` goes into a PNG's text chunks (see :func:`png_text`).
    """
    path = Path(path)
    if text:
        if path.suffix.lower() != ".png" or palette is not None:
            raise ValueError(f"text is kept in plain PNGs only, not in {path.name}")
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG", pnginfo=info)
        return path
    with atomic_path(path) as tmp:
        if palette is not None:
            if path.suffix.lower() != ".png" or array.dtype != np.uint8 or array.ndim != 2:
                raise ValueError(f"a palette image must be a 2D uint8 PNG, not {array.dtype} {array.shape} {path.name}")
            img = Image.fromarray(array)  # "L"; putpalette makes it "P" with the same values
            img.putpalette([channel for colour in palette for channel in colour], rawmode="RGB")
            img.save(tmp, format="PNG")
        elif path.suffix.lower() in TIFF_SUFFIXES:
            tifffile.imwrite(tmp, array)
        else:
            Image.fromarray(array).save(tmp, format="PNG")
    return path


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (read from its header, without decoding the pixels); {} when none."""
    with Image.open(path) as image:
        return dict(getattr(image, "text", {}) or {})
