"""Open whatever a user points at as a :class:`Volume`."""

from __future__ import annotations

from pathlib import Path

from membraind.errors import InputError
from membraind.volumes.image_files import is_image_path
from membraind.volumes.tile_volume import TileStoreVolume
from membraind.volumes.volume import SectionStackVolume, Volume
from membraind.volumes.voxel_size import VoxelSize

__all__ = ["open_volume"]

ACCEPTED = "a .vsvi file, a folder of PNG/TIFF sections, a multi-page TIFF, or one PNG/TIFF image"


def open_volume(path: Path, voxel_size: VoxelSize | None = None) -> Volume:
    """The volume at ``path``.

    - a ``.vsvi`` file (or a folder holding exactly one ``.vsvi`` and no images, such as a
      tile store's root) -> :class:`TileStoreVolume`;
    - a folder of PNG/TIFF sections, a multi-page TIFF or one image file ->
      :class:`SectionStackVolume`.

    ``voxel_size`` (nm, ``(x, y, z)``) overrides the one the source records (a ``.vsvi``'s,
    a TIFF's resolution tags); a source that records none gets 1 nm and
    ``voxel_size_origin`` None.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; expected {ACCEPTED}")
    if path.is_file() and path.suffix.lower() == ".vsvi":
        return TileStoreVolume(path, voxel_size)
    if path.is_dir():
        descriptor = _only_vsvi(path)
        if descriptor is not None:
            return TileStoreVolume(descriptor, voxel_size)
        return SectionStackVolume(path, voxel_size)
    if path.is_file() and is_image_path(path):
        return SectionStackVolume(path, voxel_size)
    raise InputError(f"{path} is not a volume membraind can read; give {ACCEPTED}")


def _only_vsvi(folder: Path) -> Path | None:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    descriptors = sorted(p for p in files if p.suffix.lower() == ".vsvi")
    if not descriptors or any(is_image_path(p) for p in files):
        return None
    if len(descriptors) > 1:
        names = ", ".join(p.name for p in descriptors)
        raise InputError(f"folder {folder} holds several .vsvi files ({names}); pass the one to open")
    return descriptors[0]
