"""Mip levels: each level halves x and y (z is never scaled).

Images average each 2x2 block ("mean"); label and segmentation images keep the block's
top-left pixel ("nearest"), because the mean of two segment ids is a third, unrelated id.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["downsample", "DownsampleMode"]

DownsampleMode = Literal["mean", "nearest"]


def downsample(image: np.ndarray, mode: DownsampleMode = "mean") -> np.ndarray:
    """One mip step of a 2D image ``(H, W)`` or ``(H, W, C)``.

    ``mode="mean"``: 2x2 mean, rounded for integer images. Odd sizes give
    ``ceil(H/2) x ceil(W/2)``; the last row/column is repeated so the edge pixel averages
    with itself rather than with zeros.
    ``mode="nearest"``: the top-left pixel of each 2x2 block (same output size).
    """
    if mode == "nearest":
        return np.ascontiguousarray(image[0::2, 0::2])
    if mode != "mean":
        raise ValueError(f"downsample mode must be 'mean' or 'nearest', not {mode!r}")
    h, w = image.shape[:2]
    pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge").astype(np.float32)
    mean = (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]) / 4
    if np.issubdtype(image.dtype, np.integer):
        return np.rint(mean).astype(image.dtype)
    return mean.astype(image.dtype)
