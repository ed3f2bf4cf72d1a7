"""One prediction request, end to end: open the data, plan the tiles, run the pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from membraind_client.progress import Progress, ProgressReporter, no_progress

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
from membraind.volumes.voxel_size import describe_voxel_size

__all__ = ["run_prediction", "plan_tiles", "settle_voxel_size"]


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
    if isinstance(request.volume, VastSource):  # never with mode image: PredictRequest refuses that pairing
        from membraind.vast.client import VastClient
        from membraind.vast.volume import VastVolume

        source = request.volume
        return as_gray(VastVolume(VastClient(source.host, source.port), source.layer))
    if isinstance(request.target, SingleImage):
        if not Path(request.volume).is_file():
            raise InputError(f"image file {request.volume} does not exist")
        volume: Volume = SectionStackVolume(request.volume)
        if volume.shape[0] != 1:
            raise InputError(f"{request.volume} holds {volume.shape[0]} sections; mode 'image' takes one 2D image")
        return as_gray(volume)
    return as_gray(open_volume(request.volume))


#: Pixels this much larger or smaller than the training data's are worth a warning.
PIXEL_SIZE_TOLERANCE = 1.25


def settle_voxel_size(request: PredictRequest, volume: Volume, bundles: list[Bundle], mip: int) -> list[str]:
    """Set ``volume.voxel_size`` to what the outputs record; returns notes for the user.

    In this order: the request's ``voxel_size_nm`` (``--voxel-size``); the source's own (a
    ``.vsvi``, VAST, TIFF resolution tags); the first bundle's (its training data, taken to
    be at the predicted mip); else 1 x 1 x 1 nm, with a note. A note also warns when the
    pixels the network sees differ from those it was trained on by more than
    :data:`PIXEL_SIZE_TOLERANCE` in x or y.
    """
    trained, scale = bundles[0].metadata.voxel_size_nm, 2.0**mip
    if request.voxel_size_nm is not None:
        volume.voxel_size, volume.voxel_size_origin = request.voxel_size_nm, "--voxel-size (voxel_size_nm)"
    elif volume.voxel_size_origin is None and trained is not None:
        volume.voxel_size = (trained[0] / scale, trained[1] / scale, trained[2])
        return [
            f"{volume.name} records no voxel size; the outputs' .vsvi takes the one model {bundles[0].metadata.name} "
            f"was trained at ({describe_voxel_size(volume.voxel_size)}): give --voxel-size X,Y,Z "
            "(request: voxel_size_nm) if yours differs"
        ]
    elif volume.voxel_size_origin is None:
        return [
            f"{volume.name} records no voxel size, nor does model {bundles[0].metadata.name}; the outputs' .vsvi "
            "says 1 x 1 x 1 nm: give --voxel-size X,Y,Z (request: voxel_size_nm), e.g. 4,4,30"
        ]
    seen = (volume.voxel_size[0] * scale, volume.voxel_size[1] * scale)
    notes = []
    for bundle in bundles:
        model = bundle.metadata.voxel_size_nm
        if model is None:
            continue
        ratios = (seen[0] / model[0], seen[1] / model[1])
        if all(1 / PIXEL_SIZE_TOLERANCE <= r <= PIXEL_SIZE_TOLERANCE for r in ratios):
            continue
        finer = round(math.log2(1 / ratios[0])) if ratios[0] < 1 else 0
        advice = (
            f"predict at mip {mip + finer} (--mip {mip + finer}), where the pixels are "
            f"{seen[0] * 2**finer:g} nm" if finer >= 1 else "use a model trained at this pixel size"
        )
        notes.append(
            f"warning: at mip {mip} the EM's pixels are {seen[0]:g} x {seen[1]:g} nm "
            f"(from {volume.voxel_size_origin}), but model {bundle.metadata.name} was trained on {model[0]:g} x {model[1]:g} nm pixels, and membranes "
            f"are then found poorly: {advice}"
        )
    return notes


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
        notes = settle_voxel_size(request, volume, bundles, mip)
        for note in notes:  # before the work, so a long run with a wrong model can be stopped at once
            (progress or no_progress)(Progress(phase="predicting", fraction=0.0, message=note, milestone=True))
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
        report.mip, report.notes = mip, notes
        return report
    finally:
        volume.close()
