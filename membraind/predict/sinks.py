"""Where predicted tiles go: tile stores for volumes, mirrored image files for single images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from membraind.predict.models import LoadedModel
from membraind.predict.outputs import output_channels
from membraind.predict.tiling import TileGrid, TileKey
from membraind.volumes.box import Box
from membraind.volumes.image_files import write_image
from membraind.volumes.tile_store import TileStore
from membraind.volumes.volume import Volume

__all__ = ["TileStoreSink", "ImageFileSink", "output_root", "layer_name"]


def output_root(out: Path, model_name: str, kind: str) -> Path:
    """The folder of one model's output of one kind."""
    return Path(out) / model_name / kind


def layer_name(out: Path, model: LoadedModel, kind: str, mip: int) -> str:
    """The name a store's layer gets in VAST: output folder, model, output kind, mip and the
    day the model was trained, e.g. ``predictions: isbi-v1 membrane (trained 2026-03-14)``.

    The output folder keeps two predictions with one model apart in VAST's layer list. A
    lab model's layer shows each new version in turn, and VAST keeps the name a layer was
    loaded with, so it says ``(lab model)`` instead of a date that would go stale.
    """
    if model.version is not None:
        return f"{Path(out).resolve().name}: {_store_label(model, kind, mip)} (lab model)"
    trained = f" (trained {model.created[:10]})" if model.created else ""
    return f"{Path(out).resolve().name}: {_store_label(model, kind, mip)}{trained}"


def made_by(model: LoadedModel) -> str:
    """What a tile records of the model that predicted it: its name, lab model version and
    when it was trained (``octopus-vl v2 (trained 2026-12-02T10:04:11+00:00)``)."""
    name = model.name if model.version is None else f"{model.name} v{model.version}"
    return f"{name} (trained {model.created})" if model.created else name


def _store_label(model: LoadedModel, kind: str, mip: int) -> str:
    return f"{model.name} {kind}" + (f" mip{mip}" if mip else "")


class TileStoreSink:
    """One tile store per (model, output kind) under ``out``, on the prediction grid.

    A store's first level is the predicted mip, written under ``mip<M>/``; its ``.vsvi``
    keeps the volume's mip-0 size and voxel size, so VAST lines the layer up with the EM
    (mEMbrain's framing).
    """

    def __init__(self, out: Path, volume: Volume, grid: TileGrid, models: list[LoadedModel], pyramid: bool = True):
        self.grid, self.pyramid = grid, pyramid
        self.stores: dict[tuple[str, str], TileStore] = {
            (model.name, kind): TileStore(
                output_root(out, model.name, kind),
                shape=volume.shape_at(grid.mip),
                voxel_size=volume.voxel_size,
                base_mip=grid.mip,
                full_shape=volume.shape,
                channels=output_channels(kind),
                layer_name=layer_name(out, model, kind, grid.mip),
                # The file keeps its earlier name, so a store predicted again holds one .vsvi.
                file_stem=_store_label(model, kind, grid.mip),
                tile_size=grid.tile_size,
            )
            for model in models
            for kind in model.outputs
        }
        self.made_by = {model.name: made_by(model) for model in models}

    def pending(self, key: TileKey, input_mtime: float | None) -> bool:
        """Whether the tile must be predicted: missing, older than its input, or made by another
        model or version (a store predicted again after retraining shows the new model)."""
        for name_kind, store in self.stores.items():
            mtime = store.tile_mtime(key.z, key.row, key.col, 0)
            if mtime is None or (input_mtime is not None and mtime < input_mtime):
                return True
            if store.tile_made_by(key.z, key.row, key.col, 0) != self.made_by[name_kind[0]]:
                return True
        return False

    def write(self, key: TileKey, core: Box, images: dict[tuple[str, str], np.ndarray]) -> None:
        for name_kind, image in images.items():
            self.stores[name_kind].write_tile(key.z, key.row, key.col, 0, image, self.made_by[name_kind[0]])

    def finish(self, planned: list[TileKey], written: list[TileKey]) -> list[Path]:
        paths = []
        for store in self.stores.values():
            if self.pyramid:
                # Tiles written now, and tiles of an interrupted run whose pyramid never came.
                stale = [k for k in planned if _older_parent(store, k)]
                for z, boxes in _boxes_by_section(self.grid, set(written) | set(stale)).items():
                    store.build_pyramid(range(z, z + 1), region=_union(boxes))
            paths.append(store.write_vsvi())
        return paths


def _older_parent(store: TileStore, key: TileKey) -> bool:
    if store.max_mip < 1:
        return False
    parent = store.tile_mtime(key.z, key.row // 2, key.col // 2, 1)
    child = store.tile_mtime(key.z, key.row, key.col, 0)
    return child is not None and (parent is None or parent < child)


def _boxes_by_section(grid: TileGrid, keys: set[TileKey]) -> dict[int, list[Box]]:
    boxes: dict[int, list[Box]] = {}
    for key in keys:
        boxes.setdefault(key.z, []).append(grid.core(key))
    return boxes


def _union(boxes: list[Box]) -> Box:
    first = boxes[0]
    return Box(
        x0=min(b.x0 for b in boxes), x1=max(b.x1 for b in boxes),
        y0=min(b.y0 for b in boxes), y1=max(b.y1 for b in boxes),
        z0=min(b.z0 for b in boxes), z1=max(b.z1 for b in boxes), mip=first.mip,
    )  # fmt: skip


class ImageFileSink:
    """Whole images for single-image prediction (a tile that just arrived at the scope).

    Writes ``<out>/<model>/<kind>/<relative>`` with a ``.png`` suffix, mirroring where the
    input sits below the watched folder.
    """

    def __init__(self, out: Path, relative: Path, grid: TileGrid, models: list[LoadedModel], input_path: Path):
        _, height, width = grid.bounds.shape
        self.input_path = input_path
        self.paths = {
            (m.name, kind): output_root(out, m.name, kind) / Path(relative).with_suffix(".png")
            for m in models
            for kind in m.outputs
        }
        self.images = {
            name_kind: np.zeros((height, width) + ((3,) if name_kind[1] == "rgb" else ()), np.uint8)
            for name_kind in self.paths
        }

    def pending(self, key: TileKey, input_mtime: float | None) -> bool:
        return not all(p.is_file() and p.stat().st_mtime >= (input_mtime or 0) for p in self.paths.values())

    def write(self, key: TileKey, core: Box, images: dict[tuple[str, str], np.ndarray]) -> None:
        for name_kind, image in images.items():
            self.images[name_kind][core.y0 : core.y1, core.x0 : core.x1] = image

    def finish(self, planned: list[TileKey], written: list[TileKey]) -> list[Path]:
        if written:
            for name_kind, path in self.paths.items():
                write_image(path, self.images[name_kind])
        return list(self.paths.values())
