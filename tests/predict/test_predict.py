"""Tiled, streaming prediction on real ISBI sections with a trained network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from membraind.errors import InputError
from membraind.nn.bundle import load_bundle
from membraind.predict.pipeline import PredictionCancelled
from membraind.predict.request import PredictRequest
from membraind.predict.run import run_prediction
from membraind.predict.settings import PredictSettings
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.open_volume import open_volume
from membraind.volumes.vsvi import parse_vsvi

from tests.conftest import REPO


@pytest.fixture(scope="module")
def stack(isbi, tmp_path_factory) -> Path:
    """Three real ISBI sections as a folder."""
    folder = tmp_path_factory.mktemp("stack")
    for i, name in enumerate(("05", "17", "26")):
        write_image(folder / f"s{i}.png", read_image(isbi / "train" / "image" / f"{name}.png"))
    return folder


@pytest.fixture(scope="module")
def bundle(trained_bundle):
    return load_bundle(trained_bundle)


def _predict(volume, bundle, out, settings: PredictSettings, target=None, **kwargs):
    request = PredictRequest(volume=volume, bundles=[bundle.path], out=out, target=target or {"mode": "volume"})
    return run_prediction(request, settings, bundles=[bundle], **kwargs)


def _membrane(out: Path, bundle) -> np.ndarray:
    store = out / bundle.metadata.name / "membrane"
    (vsvi,) = store.glob("*.vsvi")
    volume = open_volume(vsvi)
    return volume.read(volume.bounds(0))


def test_tiled_prediction_equals_whole_section_prediction(stack, bundle, tmp_path):
    whole = PredictSettings(tile_size=512, context=96)  # one tile per section
    tiled = PredictSettings(tile_size=128, context=96)  # 16 tiles per section
    _predict(stack, bundle, tmp_path / "whole", whole)
    report = _predict(stack, bundle, tmp_path / "tiled", tiled)
    assert report.written == 3 * 16
    a, b = _membrane(tmp_path / "whole", bundle), _membrane(tmp_path / "tiled", bundle)
    assert a.shape == b.shape == (3, 512, 512)
    difference = np.abs(a.astype(int) - b.astype(int))
    assert difference.max() <= 1, f"tiles differ from the whole section by up to {difference.max()}/255"
    assert a.std() > 20  # a real membrane map, not a constant


def test_prediction_of_a_volume_whose_size_is_not_a_multiple_of_the_tile(isbi, bundle, tmp_path):
    # 2 sections of 700 x 600 pixels cut from a mirrored ISBI section
    section = read_image(isbi / "train" / "image" / "03.png")
    big = np.pad(section, ((0, 188), (0, 88)), mode="reflect")
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([big, big[::-1]]))
    report = _predict(tmp_path / "stack.tif", bundle, tmp_path / "out", PredictSettings(tile_size=256))
    assert report.written == 2 * 3 * 3
    membrane = _membrane(tmp_path / "out", bundle)
    assert membrane.shape == (2, 700, 600)
    (vsvi,) = (tmp_path / "out" / bundle.metadata.name / "membrane").glob("*.vsvi")
    descriptor = parse_vsvi(vsvi).model_dump()
    assert descriptor["TargetDataSizeX"] == 600 and descriptor["TargetDataSizeY"] == 700
    assert descriptor["TargetDataSizeZ"] == 2 and descriptor["SourceMaxS"] == 1
    assert descriptor["SourceBytesPerPixel"] == 1
    # the partial tiles at the right and bottom edges match one whole-section tile
    _predict(tmp_path / "stack.tif", bundle, tmp_path / "whole", PredictSettings(tile_size=1024))
    assert np.abs(membrane.astype(int) - _membrane(tmp_path / "whole", bundle).astype(int)).max() <= 1


def test_rgb_em_with_equal_channels_is_converted_and_colour_is_refused(isbi, bundle, tmp_path):
    gray = read_image(isbi / "train" / "image" / "07.png")
    (tmp_path / "rgb").mkdir()
    write_image(tmp_path / "rgb" / "a.png", np.stack([gray] * 3, axis=-1))
    _predict(tmp_path / "rgb", bundle, tmp_path / "out_rgb", PredictSettings())
    (tmp_path / "gray").mkdir()
    write_image(tmp_path / "gray" / "a.png", gray)
    _predict(tmp_path / "gray", bundle, tmp_path / "out_gray", PredictSettings())
    assert np.array_equal(_membrane(tmp_path / "out_rgb", bundle), _membrane(tmp_path / "out_gray", bundle))

    colour = np.stack([gray, gray, 255 - gray], axis=-1)
    (tmp_path / "colour").mkdir()
    write_image(tmp_path / "colour" / "a.png", colour)
    with pytest.raises(InputError, match="RGB image whose channels differ.*EM must be grayscale"):
        _predict(tmp_path / "colour", bundle, tmp_path / "out_colour", PredictSettings())


def test_box_and_anchor_modes_predict_only_the_tiles_they_touch(stack, bundle, tmp_path):
    settings = PredictSettings(tile_size=256, pyramid=False)
    box = Box(x0=300, x1=310, y0=10, y1=20, z0=1, z1=2, mip=0)
    report = _predict(stack, bundle, tmp_path / "box", settings, {"mode": "box", "box": box.model_dump()})
    assert report.written == 1
    tiles = sorted(p.name for p in (tmp_path / "box").rglob("*.png"))
    assert tiles == ["sect_000001_r0_c1.png"]

    anchors = {"mode": "anchors", "points": [{"x": 10, "y": 10, "z": 0}, {"x": 20, "y": 20, "z": 0}], "cube_xy": 64, "cube_z": 1}
    report = _predict(stack, bundle, tmp_path / "anchors", settings, anchors)
    assert report.written == 1  # two anchors, one shared tile, predicted once


def test_single_image_output_mirrors_its_path(isbi, bundle, tmp_path):
    scope = tmp_path / "scope"
    image = scope / "run3" / "tile_0042.png"
    write_image(image, read_image(isbi / "test" / "image" / "04.png"))
    request = PredictRequest(volume=image, bundles=[bundle.path], out=tmp_path / "out", target={"mode": "image", "root": scope})
    report = run_prediction(request, PredictSettings(tile_size=256), bundles=[bundle])
    written = tmp_path / "out" / bundle.metadata.name / "membrane" / "run3" / "tile_0042.png"
    assert written in report.outputs and read_image(written).shape == (512, 512)
    again = run_prediction(request, PredictSettings(tile_size=256), bundles=[bundle])
    assert again.written == 0 and again.skipped == again.tiles  # up to date: not recomputed


def test_onnx_engine_and_several_bundles_in_one_pass(stack, bundle, tmp_path):
    torch_out, onnx_out, both = tmp_path / "torch", tmp_path / "onnx", tmp_path / "both"
    _predict(stack, bundle, torch_out, PredictSettings(engine="torch", precision="fp32"))
    _predict(stack, bundle, onnx_out, PredictSettings(engine="onnx"))
    assert np.abs(_membrane(torch_out, bundle).astype(int) - _membrane(onnx_out, bundle).astype(int)).max() <= 1

    twin = load_bundle(bundle.path)
    twin.metadata = twin.metadata.model_copy(update={"name": "twin"})
    request = PredictRequest(volume=stack, bundles=[bundle.path, bundle.path], out=both)
    report = run_prediction(request, PredictSettings(engine="torch", precision="fp32"), bundles=[bundle, twin])
    assert report.written == 3
    assert np.array_equal(_membrane(both, bundle), _membrane(torch_out, bundle))
    assert np.array_equal(_membrane(both, twin), _membrane(torch_out, bundle))


def test_cancelled_prediction_keeps_finished_tiles(stack, bundle, tmp_path):
    settings = PredictSettings(tile_size=128, pyramid=False)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(PredictionCancelled):
        _predict(stack, bundle, tmp_path / "out", settings, cancel=cancel)
    report = _predict(stack, bundle, tmp_path / "out", settings)
    assert report.skipped >= 4 and report.written == report.tiles - report.skipped


def test_killed_prediction_resumes_without_recomputing_finished_tiles(stack, trained_bundle, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "membraind", "predict", str(stack), "--bundle", str(trained_bundle), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    env["MEMBRAIND_PREDICT__TILE_SIZE"] = "128"
    env["MEMBRAIND_PREDICT__OUTPUTS"] = '["membrane", "classes"]'  # a tile is finished when both are written
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    membrane = out / load_bundle(trained_bundle).metadata.name / "membrane" / "mip0"
    deadline = time.monotonic() + 300
    while len(list(membrane.rglob("*.png"))) < 6:
        assert process.poll() is None and time.monotonic() < deadline, "prediction ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    classes = membrane.parent.parent / "classes" / "mip0"
    # a tile is finished when all its outputs are there; the rest must be recomputed
    finished = {
        p: p.stat().st_mtime_ns for p in membrane.rglob("*.png") if (classes / p.relative_to(membrane)).is_file()
    }

    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already up to date" in result.stdout
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert len(list(membrane.rglob("*.png"))) == 3 * 16


def test_predicting_again_after_retraining_replaces_the_older_models_tiles(stack, trained_bundle, tmp_path):
    import shutil

    from membraind.volumes.image_files import png_text

    settings = PredictSettings(tile_size=256, pyramid=False)
    box = {"mode": "box", "box": Box(x0=0, x1=512, y0=0, y1=256, z0=0, z1=2, mip=0).model_dump()}
    first = _predict(stack, load_bundle(trained_bundle), tmp_path / "out", settings, box)
    assert first.written == 4
    # The same model trained again: a bundle of the same name, written later (other weights, here the same).
    retrained = tmp_path / "retrained"
    shutil.copytree(trained_bundle, retrained)
    metadata = json.loads((retrained / "model.json").read_text())
    metadata["created"] = "2031-01-01T00:00:00+00:00"
    (retrained / "model.json").write_text(json.dumps(metadata))
    again = _predict(stack, load_bundle(retrained), tmp_path / "out", settings, box)
    assert (again.written, again.skipped) == (4, 0), "tiles of the older model were kept"
    tiles = sorted((tmp_path / "out").rglob("sect_*.png"))
    assert len(tiles) == 4
    assert {png_text(t)["membraind-made-by"] for t in tiles} == {f"{metadata['name']} (trained 2031-01-01T00:00:00+00:00)"}
    resumed = _predict(stack, load_bundle(retrained), tmp_path / "out", settings, box)
    assert (resumed.written, resumed.skipped) == (0, 4)  # the same version again: nothing to redo
