"""A picture per segmented section to judge by eye: every cell in its own colour over the EM.

VAST's RGB-encoded ids look like near-identical blues in any other viewer; this preview
gives touching cells different colours (a greedy colouring of the cells' contact graph)
and leaves the boundary (id 0) as plain EM, so missing, merged and split cells show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from membraind.groundtruth.preview import tint, with_legend
from membraind.segment.metrics import fill_boundary
from membraind.volumes.image_files import write_image
from membraind.volumes.mips import downsample

__all__ = ["CELL_COLOURS", "PREVIEW_DIR", "cell_colours", "preview_path", "segmentation_preview", "write_segmentation_preview"]

PREVIEW_DIR = "preview"
#: Sections are shrunk by halves until their longer side is at most this (cheap to write, fits a screen).
MAX_SIDE = 2048
#: Opacity of the cell colours on the EM.
ALPHA = 0.45

#: Distinct colours (the first eight of Sasha Trubetskoy's list; the others come within
#: 80 RGB units of one of these and look alike once laid over EM).
CELL_COLOURS = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)],
    np.uint8,
)


def preview_path(out: Path, z: int) -> Path:
    """Where section ``z``'s preview of the segmentation in ``out`` is written."""
    return Path(out) / PREVIEW_DIR / f"section_{z:06d}.png"


def cell_colours(ids: np.ndarray) -> np.ndarray:
    """An index into :data:`CELL_COLOURS` per id of ``ids`` (H, W), as an (H, W) array
    (-1 on id 0): cells that touch, or face each other across the boundary, never share
    a colour while any of the palette is free; which free colour a cell gets depends on
    its id only, so a rerun gives the same picture."""
    result = np.full(ids.shape, -1, np.int64)
    if not ids.any():
        return result
    filled = fill_boundary(ids)  # cells facing each other across boundary pixels now touch
    cells, compact = np.unique(filled, return_inverse=True)
    compact = compact.reshape(filled.shape)
    pairs = np.concatenate(
        [
            np.stack([compact[:, :-1].ravel(), compact[:, 1:].ravel()], 1),
            np.stack([compact[:-1, :].ravel(), compact[1:, :].ravel()], 1),
        ]
    )
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    neighbours: list[list[int]] = [[] for _ in cells]
    for a, b in pairs:
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    colour = np.full(len(cells), -1, np.int64)
    n = len(CELL_COLOURS)
    for cell in sorted(range(len(cells)), key=lambda c: -len(neighbours[c])):  # most neighbours first
        taken = np.bincount([colour[m] for m in neighbours[cell] if colour[m] >= 0], minlength=n)
        start = int(cells[cell]) * 7 % n  # spread the colours by id, not always the first free one
        order = [(start + k) % n for k in range(n)]
        colour[cell] = min(order, key=lambda c: taken[c])  # a free colour, else the least used
    result = colour[compact]
    result[ids == 0] = -1
    return result


def segmentation_preview(background: np.ndarray, ids: np.ndarray, title: str, on_em: bool = True) -> np.ndarray:
    """RGB picture: ``ids`` (H, W; 0 = boundary) coloured over the [0, 1] ``background``
    (the EM, or with ``on_em=False`` the inverted membrane probability), shrunk to
    :data:`MAX_SIDE`, with a legend under it."""
    while max(ids.shape) > MAX_SIDE:
        ids, background = downsample(ids, "nearest"), downsample(background, "mean")
    index = cell_colours(ids)
    picture = tint(background, CELL_COLOURS[np.maximum(index, 0)], np.where(index >= 0, ALPHA, 0.0))
    cells = len(np.unique(ids[ids > 0]))
    under = "on the EM" if on_em else "on the membrane probability (membrane dark)"
    entries = [
        (tuple(int(c) for c in CELL_COLOURS[0]), "one colour per cell; touching cells differ"),
        (None, "boundary (id 0): no colour"),
    ]
    return with_legend(picture, f"{title}: {cells} cells {under}", entries)


def write_segmentation_preview(out: Path, z: int, background: np.ndarray, ids: np.ndarray, on_em: bool) -> Path:
    """Write section ``z``'s preview to :func:`preview_path` and return the path."""
    return write_image(preview_path(out, z), segmentation_preview(background, ids, f"section {z}", on_em))
