"""An EM layer of a running VAST as a :class:`~membraind.volumes.volume.Volume`.

With it every prediction mode (volume, box, anchors) runs against a live VAST exactly as
against files: the pipeline reads boxes, the client turns them into VAST requests.
"""

from __future__ import annotations

from itertools import takewhile

import numpy as np

from membraind.errors import InputError
from membraind.vast.client import VastClient
from membraind.vast.protocol import VastRefused
from membraind.volumes.box import Box
from membraind.volumes.volume import Volume
from membraind.volumes.voxel_size import UNKNOWN

__all__ = ["VastVolume"]


class VastVolume(Volume):
    """EM layer ``layer`` (a number or a layer name) of the VAST that ``client`` talks to.

    Sizes per mip come from VAST's own scale factors (``floor(size / factor)``, as VAST
    computes them), so boxes never reach past what VAST holds. The layer is followed by
    its name: when VAST inserts a layer above it (LOADLAYER puts one after the selected
    layer), its number moves and the next read finds it again.
    """

    def __init__(self, client: VastClient, layer: int | str = 0) -> None:
        self.client = client
        self.layer = client.layer_number(layer)
        info = client.info()
        layer_info = client.layer_info(self.layer)
        self.layer_name = layer_info.name
        if layer_info.bytes_per_pixel not in (1, 3):
            raise InputError(
                f"VAST layer {self.layer} ({layer_info.name!r}) has {layer_info.bytes_per_pixel} bytes per pixel; "
                "membraind reads 8-bit gray or RGB EM layers: choose the EM layer"
            )
        x, y, z = info.size
        self.shape = (z, y, x)
        if info.voxel_size != UNKNOWN:
            self.voxel_size, self.voxel_size_origin = info.voxel_size, f"VAST at {client.address}"
        # Only mips that keep every section (z factor 1) and at least a pixel: boxes scale x and y only.
        factors = client.scale_factors(self.layer)[: max(1, info.mips)] or [(1, 1, 1)]
        self.factors = list(takewhile(lambda f: f[2] == 1 and x // f[0] and y // f[1], factors)) or [(1, 1, 1)]
        self.mips = len(self.factors)
        self.channels = 3 if layer_info.bytes_per_pixel == 3 else 1
        self.dtype = np.dtype(np.uint8)
        self.name = f"VAST layer {self.layer} ({layer_info.name}) at {client.address}"

    def shape_at(self, mip: int) -> tuple[int, int, int]:
        fx, fy, fz = self.factors[mip]
        z, y, x = self.shape
        return (z // fz, y // fy, x // fx)

    def _read(self, box: Box) -> np.ndarray:
        self._follow_layer()
        return self.client.read_em(self.layer, box)

    def _follow_layer(self) -> None:
        """Find the layer by its name again if another one now has its number (one small request per read)."""
        try:
            if self.client.layer_info(self.layer).name == self.layer_name:
                return
        except VastRefused:
            pass  # fewer layers now: that number is gone
        self.layer = self.client.find_layer(self.layer_name)

    def close(self) -> None:
        self.client.close()
