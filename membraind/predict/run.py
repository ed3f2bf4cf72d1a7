"""One prediction request, end to end: open the data, plan the tiles, run the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from membraind_client.progress import ProgressReporter

from membraind.errors import InputError
from membraind.nn.bundle import Bundle, load_bundle
from membraind.predict.models import prepare_models
from membraind.predict.pipeline import PredictionReport, predict_tiles
from membraind.predict.request import Anchors, BoxRegion, PredictRequest, SingleImage, VastSource
from membraind.predict.runtimes import Runtime
from membraind.predict.settings import PredictSettings
from membraind.predict.sinks import ImageFileSink, TileStoreSink
from membraind.predict.tiling import TileGrid, TileKey
from membraind.volumes.gray import as_gray
from membraind.volumes.open_volume import open_volume
from membraind.volumes.volume import SectionStackVolume, Volume

__all__ = ["run_prediction", "plan_tiles"]


def plan_tiles(request: PredictRequest, grid: TileGrid) -> list[TileKey]:
    """The tiles a request's target covers, each once, in (z, row, col) order."""
    target = request.target
    if isinstance(target, BoxRegion):
        keys = grid.touching(target.box)
        if not keys:
            raise InputError(f"box {target.box} lies outside the volume ({grid.bounds}); nothing to predict")
        return keys
    if isinstance(target, Anchors):
        keys = grid.union(target.boxes())
        if not keys:
            raise InputError(f"no anchor cube overlaps the volume ({grid.bounds}); check the anchor coordinates (mip 0)")
        return keys
    return grid.touching(grid.bounds)


def _relative_image_path(request: PredictRequest, target: SingleImage) -> Path:
    path = Path(request.volume)
    root = Path(target.root) if target.root else path.parent
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        raise InputError(f"image {path} is not inside its root folder {root}") from None


def _open(request: PredictRequest) -> Volume:
    voxel = request.voxel_size_nm
    if isinstance(request.volume, VastSource):  # never with mode image: PredictRequest refuses that pairing
        from membraind.vast.client import VastClient
        from membraind.vast.volume import VastVolume

        source = request.volume
        return as_gray(VastVolume(VastClient(source.host, source.port), source.layer))
    if isinstance(request.target, SingleImage):
        if not Path(request.volume).is_file():
            raise InputError(f"image file {request.volume} does not exist")
        volume: Volume = SectionStackVolume(request.volume, voxel or (1.0, 1.0, 1.0))
        if volume.shape[0] != 1:
            raise InputError(f"{request.volume} holds {volume.shape[0]} sections; mode 'image' takes one 2D image")
        return as_gray(volume)
    return as_gray(open_volume(request.volume, voxel))


def run_prediction(
    request: PredictRequest,
    settings: PredictSettings,
    *,
    bundles: list[Bundle] | None = None,
    runtimes: list[Runtime] | None = None,
    progress: ProgressReporter | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PredictionReport:
    """Predict what ``request`` asks for. ``bundles``/``runtimes`` may be passed in already
    loaded (the engine process keeps them between jobs)."""
    bundles = bundles or [load_bundle(path) for path in request.bundles]
    volume = _open(request)
    try:
        mip = bundles[0].metadata.mip if request.mip is None else request.mip
        if mip >= volume.mips:
            raise InputError(f"{volume.name} has mip levels 0-{volume.mips - 1}; mip {mip} was asked for")
        grid = TileGrid(volume, mip, settings.tile_size)
        keys = plan_tiles(request, grid)
        models = prepare_models(bundles, volume, mip, settings, runtimes)
        if isinstance(request.target, SingleImage):
            relative = _relative_image_path(request, request.target)
            sink = ImageFileSink(request.out, relative, grid, models, Path(request.volume))
        else:
            sink = TileStoreSink(request.out, volume, grid, models, settings.pyramid)
        cpu = all(m.runtime.device.type == "cpu" for m in models)
        report = predict_tiles(
            volume, grid, keys, models, sink,
            context=settings.context,
            batch_size=settings.batch_size or (1 if cpu else 4),
            prefetch=settings.prefetch,
            overwrite=settings.overwrite,
            progress=progress,
            cancel=cancel,
        )  # fmt: skip
        report.mip = mip
        return report
    finally:
        volume.close()
