"""Writing VAST tile stores: fixed-size PNG tiles per section and mip, described by a ``.vsvi``.

Layout (mEMbrain's, which VAST's ``imagetiles`` server reads)::

    <root>/mip<M>/Sect_<z:06d>/sect_<z:06d>_r<row>_c<col>.png

Section ``z``, tile row and column are 0-based; tile (row, col) at mip ``M`` holds the
pixels ``[row*T, (row+1)*T) x [col*T, (col+1)*T)`` of that mip. Every PNG is a full
``T x T`` tile, zero-padded beyond the volume edge, as VAST expects. Every file is
written under a temporary name and renamed, so VAST or a reader never sees half a tile.

Mips 1..N form a pyramid computed from mip 0 (2x2 mean for images, top-left pixel for
segmentations); rebuilding it for a region rewrites only the tiles that region touches.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np

from membraind.errors import InputError
from membraind.volumes import vsvi
from membraind.volumes.box import Box, size_at_mip
from membraind.volumes.image_files import png_text, read_image, write_image
from membraind.volumes.mips import downsample

__all__ = ["TileStore", "ids_to_rgb", "rgb_to_ids", "MAX_RGB_ID", "TILE_TEMPLATE", "TILE_SEQUENCE"]

# The one naming rule: the .vsvi templates and tile_path() both come from it.
TILE_TEMPLATE = "./mip%d/Sect_%06d/sect_%06d_r%d_c%d.png"
TILE_SEQUENCE = "mssrc"
MIP0_TEMPLATE = TILE_TEMPLATE.replace("mip%d", "mip0", 1)
MIP0_SEQUENCE = TILE_SEQUENCE[1:]

MAX_RGB_ID = 2**24 - 1
MADE_BY_KEY = "membraind-made-by"  # PNG text chunk: the model (and version) that predicted a tile

StoreKind = Literal["image", "segmentation"]


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids as 8-bit RGB, the way VAST reads RGB segmentation tiles.

    ``id -> (R, G, B) = (id >> 16 & 255, id >> 8 & 255, id & 255)``, so an ``(H, W)`` id
    image becomes ``(H, W, 3)`` uint8. Ids must lie in ``0 .. 2**24 - 1`` (0 = background).
    """
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_RGB_ID):
        raise ValueError(f"segment ids must lie in 0..{MAX_RGB_ID} to fit in RGB; got {ids.min()}..{ids.max()}")
    ids = ids.astype(np.uint32)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], axis=-1).astype(np.uint8)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """The inverse of :func:`ids_to_rgb`: ``(..., 3)`` uint8 -> ``(...)`` uint32 ids."""
    rgb = np.asarray(rgb).astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class TileStore:
    """A VAST tile store under ``root`` whose first level has ``shape`` ``(z, y, x)``.

    ``kind="image"``: 8-bit gray (``channels=1``) or RGB (``channels=3``) tiles, pyramid by
    2x2 mean. ``kind="segmentation"``: arrays are segment ids, written as 8-bit gray
    (``channels=1``, ids up to 255) or RGB-encoded (``channels=3``, see
    :func:`ids_to_rgb`), pyramid by nearest pixel. Arrays passed in and returned are
    ``(H, W)`` (ids or gray) or ``(H, W, 3)`` (RGB images).

    Levels (the ``mip`` of every method) count from the store's first level, which is
    VAST's mip ``base_mip``: a store of a prediction made at mip 2 writes its level 0 under
    ``mip2/``. Its ``.vsvi`` describes the layer at mip 0 as VAST wants it, lining up with
    the EM (``full_shape``: the mip-0 size; ``voxel_size``: the mip-0 voxel size), with the
    levels below ``base_mip`` missing (black), as mEMbrain wrote them.
    """

    def __init__(
        self,
        root: Path,
        shape: tuple[int, int, int],
        voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0),
        channels: int = 1,
        layer_name: str | None = None,
        tile_size: int = 1024,
        kind: StoreKind = "image",
        file_stem: str | None = None,
        base_mip: int = 0,
        full_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"a tile store needs a (z, y, x) shape of positive sizes, not {shape}")
        if channels not in (1, 3):
            raise ValueError(f"a tile store holds 1 (gray) or 3 (RGB) channels, not {channels}")
        if tile_size < 2 or tile_size % 2:
            raise ValueError(f"tile_size must be even (mip tiles halve it), not {tile_size}")
        if kind not in ("image", "segmentation"):
            raise ValueError(f"kind must be 'image' or 'segmentation', not {kind!r}")
        if base_mip < 0:
            raise ValueError(f"base_mip must be 0 or more, not {base_mip}")
        self.root = Path(root)
        self.shape = tuple(int(v) for v in shape)
        self.base_mip = base_mip
        self.full_shape = tuple(int(v) for v in full_shape) if full_shape else self.shape
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.channels = channels
        self.layer_name = layer_name or self.root.name
        self.file_stem = file_stem or self.layer_name  # the .vsvi's name, without the suffix
        self.tile_size = tile_size
        self.kind = kind
        self.mode = "nearest" if kind == "segmentation" else "mean"
        rgb_ids = kind == "segmentation" and channels == 3
        self.dtype = np.dtype(np.uint32 if rgb_ids else np.uint8)
        self._trailing: tuple[int, ...] = (3,) if kind == "image" and channels == 3 else ()

    # ------------------------------------------------------------------ geometry

    def bounds(self, mip: int = 0) -> Box:
        """The box of the whole volume at ``mip``."""
        z, y, x = self.shape
        return Box.from_shape((z, size_at_mip(y, mip), size_at_mip(x, mip)), mip)

    def grid(self, mip: int = 0) -> tuple[int, int]:
        """``(rows, cols)`` of tiles at ``mip``."""
        _, height, width = self.bounds(mip).shape
        return (-(-height // self.tile_size), -(-width // self.tile_size))

    @property
    def max_mip(self) -> int:
        """The default top of the pyramid: the first mip at which a section fits in one tile."""
        mip = 0
        while self.grid(mip) != (1, 1):
            mip += 1
        return mip

    def tile_path(self, z: int, row: int, col: int, mip: int = 0) -> Path:
        """The PNG of tile (``row``, ``col``) of section ``z`` at ``mip``."""
        return self.root / vsvi.expand_template(TILE_TEMPLATE, TILE_SEQUENCE, s=z, r=row, c=col, m=self.base_mip + mip)

    def tile_box(self, z: int, row: int, col: int, mip: int = 0) -> Box:
        """The pixels tile (``row``, ``col``) holds, clipped to the volume."""
        rows, cols = self.grid(mip)
        if not (0 <= z < self.shape[0] and 0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"tile z {z}, row {row}, col {col} lies outside the {rows}x{cols} grid at mip {mip}")
        t = self.tile_size
        box = Box(x0=col * t, x1=(col + 1) * t, y0=row * t, y1=(row + 1) * t, z0=z, z1=z + 1, mip=mip)
        return box.intersect(self.bounds(mip))

    def tiles_touching(self, box: Box) -> list[tuple[int, int, int]]:
        """``(z, row, col)`` of every tile at ``box.mip`` that overlaps ``box``."""
        box = box.intersect(self.bounds(box.mip))
        if box.empty:
            return []
        t = self.tile_size
        return [
            (z, row, col)
            for z in range(box.z0, box.z1)
            for row in range(box.y0 // t, -(-box.y1 // t))
            for col in range(box.x0 // t, -(-box.x1 // t))
        ]

    # ------------------------------------------------------------------ tiles

    def tile_mtime(self, z: int, row: int, col: int, mip: int = 0) -> float | None:
        """When the tile was last written (seconds since the epoch), None if it does not exist."""
        try:
            return self.tile_path(z, row, col, mip).stat().st_mtime
        except FileNotFoundError:
            return None

    def write_tile(self, z: int, row: int, col: int, mip: int, array: np.ndarray, made_by: str | None = None) -> Path:
        """Write one tile; ``array`` has the shape of :meth:`tile_box` (clipped at the edges).

        ``made_by`` (e.g. the model and version that predicted it) is kept in the PNG,
        where :meth:`tile_made_by` reads it.
        """
        box = self.tile_box(z, row, col, mip)
        array = self._checked(array, box.shape[1:], f"tile z {z}, row {row}, col {col} at mip {mip}")
        full = np.zeros((self.tile_size, self.tile_size) + self._trailing, self.dtype)
        full[: array.shape[0], : array.shape[1]] = array
        text = {MADE_BY_KEY: made_by} if made_by else None
        return write_image(self.tile_path(z, row, col, mip), self._encode(full), text=text)

    def tile_made_by(self, z: int, row: int, col: int, mip: int = 0) -> str | None:
        """What made the tile (:meth:`write_tile`'s ``made_by``); None when unknown or missing."""
        try:
            return png_text(self.tile_path(z, row, col, mip)).get(MADE_BY_KEY)
        except (FileNotFoundError, OSError):
            return None

    def read_tile(self, z: int, row: int, col: int, mip: int = 0) -> np.ndarray | None:
        """The tile's pixels (shape of :meth:`tile_box`), None when it was never written."""
        box = self.tile_box(z, row, col, mip)
        path = self.tile_path(z, row, col, mip)
        if not path.is_file():
            return None
        image = read_image(path)
        expected = (self.tile_size, self.tile_size) + ((3,) if self.channels == 3 else ())
        if image.shape != expected or image.dtype != np.uint8:
            raise InputError(
                f"tile {path} is {image.shape} {image.dtype}; this store writes {expected} uint8 tiles. "
                "It was written with other settings: delete the store folder or choose another output folder"
            )
        _, height, width = box.shape
        return np.array(self._decode(image)[:height, :width])  # the caller's own, writable copy

    # ------------------------------------------------------------------ regions

    def write_region(self, box: Box, array: np.ndarray) -> list[Path]:
        """Write ``array`` (``box.shape``, plus 3 for RGB images) into the tiles ``box`` touches.

        Tiles the box only partly covers keep their other pixels (read, pasted, rewritten);
        missing tiles start black. Returns the files written.
        """
        if not self.bounds(box.mip).contains(box):
            raise ValueError(f"box {box} lies outside the store ({self.bounds(box.mip)})")
        array = self._checked(array, box.shape, f"region {box}")
        written = []
        for z, row, col in self.tiles_touching(box):
            tile_box = self.tile_box(z, row, col, box.mip)
            part = tile_box.intersect(box)
            piece = array[part.slices(box)][0]
            if part != tile_box:
                tile = self.read_tile(z, row, col, box.mip)
                tile = np.zeros(tile_box.shape[1:] + self._trailing, self.dtype) if tile is None else tile
                tile[part.slices(tile_box)[1:]] = piece
                piece = tile
            written.append(self.write_tile(z, row, col, box.mip, piece))
        return written

    def read_region(self, box: Box) -> np.ndarray:
        """The pixels of ``box`` assembled from the tiles (missing tiles read as 0)."""
        out = np.zeros(box.shape + self._trailing, self.dtype)
        for z, row, col in self.tiles_touching(box):
            tile = self.read_tile(z, row, col, box.mip)
            if tile is not None:
                tile_box = self.tile_box(z, row, col, box.mip)
                part = tile_box.intersect(box)
                out[part.slices(box)] = tile[part.slices(tile_box)[1:]]
        return out

    # ------------------------------------------------------------------ pyramid

    def build_pyramid(self, z_range: range | None = None, max_mip: int | None = None, region: Box | None = None) -> int:
        """Compute mips 1..``max_mip`` (default :attr:`max_mip`) of the sections in ``z_range``
        (default all) from mip 0; returns the number of tiles written.

        With ``region`` (a box at any mip), only the tiles overlapping it are recomputed;
        the others are read from disk, so a small update refreshes only what changed.
        Tiles with no source tile below them are not written.
        """
        top = self.max_mip if max_mip is None else max_mip
        z_range = range(self.shape[0]) if z_range is None else z_range
        region = self.bounds(0) if region is None else region
        count = [0]
        for z in z_range:
            if not region.z0 <= z < region.z1:
                continue
            if top < 1:
                break
            for _, row, col in self.tiles_touching(region.at_mip(top).intersect(self.bounds(top).section(z))):
                self._pyramid_tile(z, top, row, col, region, count)
        return count[0]

    def _pyramid_tile(self, z: int, mip: int, row: int, col: int, region: Box, count: list[int]) -> np.ndarray | None:
        # Depth first: each recomputed child feeds its parent straight from memory, and at
        # most one 2x2 block per level is held, however large the section.
        source = self.tile_box(z, row, col, mip).at_mip(mip - 1).intersect(self.bounds(mip - 1))
        canvas = np.zeros(source.shape[1:] + self._trailing, self.dtype)
        found = False
        for _, child_row, child_col in self.tiles_touching(source):
            child_box = self.tile_box(z, child_row, child_col, mip - 1)
            if mip - 1 >= 1 and not child_box.intersect(region).empty:
                child = self._pyramid_tile(z, mip - 1, child_row, child_col, region, count)
            else:
                child = self.read_tile(z, child_row, child_col, mip - 1)
            if child is not None:
                canvas[child_box.slices(source)[1:]] = child
                found = True
        if not found:
            return None
        tile = downsample(canvas, self.mode)
        self.write_tile(z, row, col, mip, tile)
        count[0] += 1
        return tile

    def highest_mip(self) -> int:
        """The highest level with tiles on disk (0 when there is no pyramid)."""
        mip = 0
        while (folder := self.root / f"mip{self.base_mip + mip + 1}").is_dir() and any(folder.iterdir()):
            mip += 1
        return mip

    # ------------------------------------------------------------------ descriptor

    def descriptor(self) -> vsvi.VsviDescriptor:
        """The ``.vsvi`` descriptor of the store as it is on disk now (absolute templates)."""
        z, y, x = self.full_shape
        rows, cols = -(-y // self.tile_size), -(-x // self.tile_size)  # the mip-0 grid
        top = self.base_mip + self.highest_mip()
        # Mipmaps from 1 (or from the first level written) to the top; 0/0: no mipmaps at all.
        first = min(1, top) if self.base_mip == 0 else self.base_mip
        root = self.root.resolve()
        vx, vy, vz = self.voxel_size
        return vsvi.VsviDescriptor(
            Comment=f"membraind tile store ({self.kind}, {'RGB' if self.channels == 3 else 'gray'})",
            ServerType="imagetiles",
            SourceFileNameTemplate=str(root / MIP0_TEMPLATE), SourceParamSequence=MIP0_SEQUENCE,
            SourceMinS=0, SourceMaxS=z - 1, SourceMinR=0, SourceMaxR=rows - 1, SourceMinC=0, SourceMaxC=cols - 1,
            MipMapFileNameTemplate=str(root / TILE_TEMPLATE), MipMapParamSequence=TILE_SEQUENCE,
            SourceMinM=first, SourceMaxM=top,
            SourceTileSizeX=self.tile_size, SourceTileSizeY=self.tile_size,
            SourceBytesPerPixel=self.channels, MissingImagePolicy="black",
            TargetDataSizeX=x, TargetDataSizeY=y, TargetDataSizeZ=z,
            OffsetX=0, OffsetY=0, OffsetZ=0, OffsetMip=0,
            TargetVoxelSizeXnm=vx, TargetVoxelSizeYnm=vy, TargetVoxelSizeZnm=vz,
            TargetLayerName=self.layer_name,
        )  # fmt: skip

    def write_vsvi(self, path: Path | None = None) -> Path:
        """Write the store's ``.vsvi`` (default ``<root>/<file stem>.vsvi``) and return its path."""
        if path is None:
            stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", self.file_stem).strip(" .") or "layer"
            path = self.root / f"{stem}.vsvi"
        return vsvi.write_vsvi(path, self.descriptor())

    # ------------------------------------------------------------------ pixel encoding

    def _checked(self, array: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        array = np.asarray(array)
        expected = tuple(shape) + self._trailing
        if array.shape != expected:
            raise ValueError(f"{what} expects an array of shape {expected}, got {array.shape}")
        if array.dtype != self.dtype:
            if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
                raise ValueError(f"{what}: this store takes {self.dtype} pixels, got {array.dtype}")
            limit = MAX_RGB_ID if self.dtype == np.uint32 else 255
            if array.size and (array.min() < 0 or array.max() > limit):
                raise ValueError(f"{what}: values {array.min()}..{array.max()} do not fit 0..{limit}")
            array = array.astype(self.dtype)
        return array

    def _encode(self, array: np.ndarray) -> np.ndarray:
        return ids_to_rgb(array) if self.dtype == np.uint32 else array

    def _decode(self, image: np.ndarray) -> np.ndarray:
        return rgb_to_ids(image) if self.dtype == np.uint32 else image
