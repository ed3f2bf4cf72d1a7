"""Gray views of colour volumes: networks take one gray channel.

EM saved as 8-bit RGB usually repeats one gray value in all three channels; such data
is converted losslessly. Data whose channels differ is real colour (a probability
layer, an overlay), and predicting on it would be a mistake, so it is refused.
"""

from __future__ import annotations

import numpy as np

from membraind.errors import InputError
from membraind.volumes.box import Box
from membraind.volumes.volume import Volume

__all__ = ["GrayVolume", "as_gray"]


class GrayVolume(Volume):
    """A colour volume read as gray, refusing pixels whose channels differ."""

    def __init__(self, source: Volume) -> None:
        self.source = source
        self.shape, self.dtype, self.voxel_size = source.shape, source.dtype, source.voxel_size
        self.voxel_size_origin = source.voxel_size_origin
        self.mips, self.channels, self.name = source.mips, 1, source.name

    def _read(self, box: Box) -> np.ndarray:
        rgb = self.source.read(box)
        gray = rgb[..., 0]
        if not (np.array_equal(gray, rgb[..., 1]) and np.array_equal(gray, rgb[..., 2])):
            raise InputError(
                f"{self.name} is an RGB image whose channels differ ({box}); EM must be grayscale. "
                "Convert it to 8- or 16-bit gray, or point at the EM layer rather than a colour layer"
            )
        return gray

    def shape_at(self, mip: int) -> tuple[int, int, int]:
        return self.source.shape_at(mip)

    def mtime(self, box: Box) -> float | None:
        return self.source.mtime(box)

    def close(self) -> None:
        self.source.close()


def as_gray(volume: Volume) -> Volume:
    """``volume`` itself when gray, else a :class:`GrayVolume` over it."""
    return volume if volume.channels == 1 else GrayVolume(volume)
