"""Reading any ``.vsvi``-described tile folder as a :class:`Volume`.

Works for membraind's own tile stores and for VAST exports alike: wildcards and
back-slashes in templates, 1-based row/column numbering, separate mipmap templates,
gray (1 or 2 bytes per pixel) or RGB tiles. Tile (r, c) at mip m covers
``x in [(c - SourceMinC) * TileX, +TileX)``, ``y in [(r - SourceMinR) * TileY, +TileY)``
of that mip; section z is slice ``SourceMinS + z`` (or the z-th of ``SourceSectionOrder``).
The ``Offset*`` keys are kept but not applied (their exact VAST meaning is unknown).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Iterator

import numpy as np

from membraind.errors import InputError
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image
from membraind.volumes.vsvi import TilePaths, parse_vsvi
from membraind.volumes.volume import Volume
from membraind.volumes.voxel_size import UNKNOWN, VoxelSize, parse_voxel_size

__all__ = ["TileStoreVolume"]

_Key = tuple[int, int, int, int]  # (z, row, col, mip), row/col 0-based on the pixel grid


class TileStoreVolume(Volume):
    """The layer a ``.vsvi`` file describes, read tile by tile.

    Recently decoded tiles are kept in a bounded LRU cache shared by all threads.
    Missing tiles follow ``MissingImagePolicy``: black (0), white (the dtype's maximum,
    255 for 8 bit), or nearest (the nearest existing tile of the same section and mip,
    black when the section has none). Folder listings and missing tiles are cached too;
    call :meth:`clear_cache` to see tiles written since.
    """

    def __init__(
        self,
        path: Path,
        voxel_size: VoxelSize | None = None,
        cache_tiles: int = 32,
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.descriptor = d = parse_vsvi(self.path)
        self.paths = TilePaths(d, self.path)
        self.shape = (d.TargetDataSizeZ, d.TargetDataSizeY, d.TargetDataSizeX)
        if voxel_size:
            self.voxel_size, self.voxel_size_origin = parse_voxel_size(voxel_size), "given"
        elif (recorded := (d.TargetVoxelSizeXnm, d.TargetVoxelSizeYnm, d.TargetVoxelSizeZnm)) != UNKNOWN:
            self.voxel_size, self.voxel_size_origin = recorded, str(self.path)
        self.mips = d.mip_levels
        self.first_mip = self._first_level()
        self.channels = 1 if d.SourceBytesPerPixel <= 2 else 3  # 4 bytes: RGBA, alpha dropped
        self.dtype = np.dtype(np.uint16 if d.SourceBytesPerPixel == 2 else np.uint8)
        self.tile_size = (d.SourceTileSizeY, d.SourceTileSizeX)
        self._cache: OrderedDict[_Key, np.ndarray | None] = OrderedDict()
        self._cache_size = max(1, cache_tiles)
        self._existing: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._lock = Lock()

    def _first_level(self) -> int:
        """The first mip holding tiles, for stores laid out as ``mip<M>/...`` beside the
        ``.vsvi`` (membraind's and mEMbrain's): a layer predicted at mip M starts there.
        Other layouts start at 0."""
        folder = self.path.parent
        if not (folder / "mip0").is_dir() and any((folder / f"mip{m}").is_dir() for m in range(1, self.mips)):
            return next(m for m in range(1, self.mips) if (folder / f"mip{m}").is_dir())
        return 0

    # ------------------------------------------------------------------ tiles

    def grid(self, mip: int = 0) -> tuple[int, int]:
        """``(rows, cols)`` of tiles covering the volume at ``mip``."""
        _, height, width = self.shape_at(mip)
        return (-(-height // self.tile_size[0]), -(-width // self.tile_size[1]))

    def tile_path(self, z: int, row: int, col: int, mip: int = 0) -> Path | None:
        """The file of the tile at grid position (``row``, ``col``) (0-based) of section ``z``;
        None when a wildcard in the template matches nothing."""
        d = self.descriptor
        s = d.section_number(z)
        return self.paths.path(s, d.SourceMinR + row, d.SourceMinC + col, mip)

    def clear_cache(self) -> None:
        """Forget decoded tiles, missing tiles and folder listings."""
        with self._lock:
            self._cache.clear()
            self._existing.clear()
        self.paths.clear_cache()

    def _tile(self, key: _Key) -> np.ndarray | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        path = self.tile_path(*key)
        tile = self._decode(path) if path is not None and path.is_file() else None
        if tile is not None:
            tile.setflags(write=False)  # shared through the cache
        with self._lock:
            self._cache[key] = tile
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return tile

    def _decode(self, path: Path) -> np.ndarray:
        tile = read_image(path)
        if tile.dtype != self.dtype:
            raise InputError(
                f"tile {path} is {tile.dtype}, but {self.path} declares SourceBytesPerPixel "
                f"{self.descriptor.SourceBytesPerPixel}; correct SourceBytesPerPixel in the .vsvi file"
            )
        if self.channels == 3 and tile.ndim == 2:
            return np.repeat(tile[..., None], 3, axis=-1)  # a gray tile in a colour layer
        if self.channels == 1 and tile.ndim == 3:
            raise InputError(
                f"tile {path} is a colour image, but {self.path} declares SourceBytesPerPixel "
                f"{self.descriptor.SourceBytesPerPixel} (gray); set it to 3 for RGB tiles"
            )
        return tile

    def _tile_or_substitute(self, key: _Key) -> np.ndarray | None:
        tile = self._tile(key)
        if tile is not None or self.descriptor.MissingImagePolicy != "nearest":
            return tile
        z, row, col, mip = key
        existing = self._existing_tiles(z, mip)
        if not existing:
            return None
        near = min(existing, key=lambda rc: ((rc[0] - row) ** 2 + (rc[1] - col) ** 2, rc))
        return self._tile((z, near[0], near[1], mip))

    def _existing_tiles(self, z: int, mip: int) -> list[tuple[int, int]]:
        with self._lock:
            if (z, mip) in self._existing:
                return self._existing[(z, mip)]
        rows, cols = self.grid(mip)
        found = []
        for row in range(rows):
            for col in range(cols):
                path = self.tile_path(z, row, col, mip)
                if path is not None and path.is_file():
                    found.append((row, col))
        with self._lock:
            self._existing[(z, mip)] = found
        return found

    # ------------------------------------------------------------------ Volume

    def _keys(self, box: Box) -> Iterator[tuple[int, _Key]]:
        """``(index in box, key)`` of every tile overlapping ``box``."""
        ty, tx = self.tile_size
        for zi, z in enumerate(range(box.z0, box.z1)):
            for row in range(box.y0 // ty, -(-box.y1 // ty)):
                for col in range(box.x0 // tx, -(-box.x1 // tx)):
                    yield zi, (z, row, col, box.mip)

    def _read(self, box: Box) -> np.ndarray:
        trailing = (3,) if self.channels == 3 else ()
        fill = np.iinfo(self.dtype).max if self.descriptor.MissingImagePolicy == "white" else 0
        out = np.full(box.shape + trailing, fill, self.dtype)
        ty, tx = self.tile_size
        for zi, key in self._keys(box):
            tile = self._tile_or_substitute(key)
            if tile is None:
                continue
            # Tiles may be cut short at the volume edge (VAST exports) or padded (ours).
            y0, x0 = key[1] * ty, key[2] * tx
            ya, yb = max(box.y0, y0), min(box.y1, y0 + min(ty, tile.shape[0]))
            xa, xb = max(box.x0, x0), min(box.x1, x0 + min(tx, tile.shape[1]))
            if ya < yb and xa < xb:
                target = out[zi, ya - box.y0 : yb - box.y0, xa - box.x0 : xb - box.x0]
                target[...] = tile[ya - y0 : yb - y0, xa - x0 : xb - x0]
        return out

    def mtime(self, box: Box) -> float | None:
        """The newest modification time of the tile files ``box`` reads, None if none exist."""
        stamps = []
        for _, key in self._keys(box):
            path = self.tile_path(*key)
            if path is None:
                continue
            try:
                stamps.append(path.stat().st_mtime)
            except FileNotFoundError:
                pass
        return max(stamps, default=None)
