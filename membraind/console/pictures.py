"""Pictures for the Look page: a section of the EM, the membrane probability as a
see-through overlay (PNG), and the sampler's contact sheet of ground-truth patches.

Read through the one volume interface (:func:`~membraind.volumes.open_volume.open_volume`),
so tile stores, section folders and TIFF stacks all work.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from membraind.volumes.box import Box
from membraind.volumes.open_volume import open_volume

__all__ = ["LayerInfo", "layer_info", "section_png", "overlay_png", "png_bytes", "MAX_SIDE"]

MAX_SIDE = 4096  # a section larger than this at a mip is shown at a coarser mip
OVERLAY_RGB = (255, 0, 160)  # membranes in magenta: visible on gray EM, unlike red for some colour-blind people


class LayerInfo(dict):
    """``sections``, ``mips`` (readable mips whose section fits MAX_SIDE) and ``shape`` of a volume."""


def layer_info(path: Path) -> LayerInfo:
    """How many sections and which mips the volume at ``path`` offers."""
    volume = open_volume(Path(path))
    try:
        first = getattr(volume, "first_mip", 0)
        mips = [m for m in range(first, volume.mips) if max(volume.shape_at(m)[1:]) <= MAX_SIDE]
        return LayerInfo(sections=volume.shape[0], mips=mips or [volume.mips - 1], shape=volume.shape)
    finally:
        volume.close()


def _read_section(path: Path, z: int, mip: int) -> np.ndarray:
    volume = open_volume(Path(path))
    try:
        mip = min(max(mip, getattr(volume, "first_mip", 0)), volume.mips - 1)
        z = min(max(z, 0), volume.shape[0] - 1)
        shape = volume.shape_at(mip)
        return volume.read(Box(x0=0, x1=shape[2], y0=0, y1=shape[1], z0=z, z1=z + 1, mip=mip))[0]
    finally:
        volume.close()


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` (gray, RGB or RGBA uint8) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # speed over size: a local network
    return buffer.getvalue()


def section_png(path: Path, z: int, mip: int) -> bytes:
    """Section ``z`` of the volume at ``path``, at ``mip``, as a PNG (gray as stored)."""
    section = _read_section(path, z, mip)
    if section.dtype != np.uint8:
        low, high = np.percentile(section, (0.5, 99.5)) if section.size else (0, 1)
        section = np.clip((section.astype(np.float32) - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    return png_bytes(section)


def overlay_png(path: Path, z: int, mip: int) -> bytes:
    """Section ``z`` of a membrane-probability volume as a magenta PNG, opaque where the network
    is sure of membrane (opacity: the probability squared, so that unsure pixels stay faint)."""
    probability = _read_section(path, z, mip)
    if probability.ndim == 3:
        probability = probability[..., 0]
    rgba = np.zeros((*probability.shape, 4), np.uint8)
    rgba[..., :3] = OVERLAY_RGB
    rgba[..., 3] = (probability.astype(np.uint16) ** 2 // 255).astype(np.uint8)
    return png_bytes(rgba)
