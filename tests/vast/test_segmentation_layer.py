"""A 2D segmentation of a prediction shown in VAST becomes a VAST segmentation layer of its own.

The emulator serves three ISBI sections over real TCP; the "prediction" is a tile store at
mip 1 framed on that volume (as a prediction of a VAST layer writes it), holding the
stand-in membrane probability of the ISBI expert membranes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from membraind_client.progress import no_progress

from membraind.config import Settings
from membraind.errors import InputError
from membraind.jobs.execute import run_job
from membraind.jobs.specs import Segment2DSpec
from membraind.segment.label_tiff import read_label_tiff
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.tile_store import TileStore
from tests.conftest import run_cli
from tests.segment.test_segment2d import standin_probability

NUMBERS = (25, 26, 27)


@pytest.fixture(scope="module")
def em_folder(isbi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("em")
    for z, number in enumerate(NUMBERS):
        write_image(folder / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{number:02d}.png"))
    return folder


@pytest.fixture(scope="module")
def predicted(isbi, tmp_path_factory):
    """The .vsvi of a membrane layer predicted at mip 1 on the 512 x 512 x 3 volume."""
    store = TileStore(tmp_path_factory.mktemp("pred") / "membrane", (3, 256, 256), layer_name="membrane", tile_size=128,
                      base_mip=1, full_shape=(3, 512, 512))  # fmt: skip
    for z, number in enumerate(NUMBERS):
        membrane = read_image(isbi / "train" / "label" / f"{number:02d}.png")[::2, ::2] < 128
        store.write_region(store.bounds(0).section(z), np.rint(standin_probability(membrane, number) * 255)[None].astype(np.uint8))
    return store.write_vsvi()


@pytest.fixture
def emulator(em_folder):
    with VastEmulator(em_folder, port=0) as emulator:
        yield emulator


def _run(spec: Segment2DSpec):
    return run_job(spec, Settings(), no_progress, lambda: False)


def test_cells_of_a_box_become_a_vast_layer_that_a_second_run_refreshes(emulator, predicted, tmp_path):
    box = Box(x0=100, x1=400, y0=50, y1=302, z0=1, z1=3)  # mip 0; at mip 1: x 50-200, y 25-151
    vast = {"host": "127.0.0.1", "port": emulator.port, "layer_name": "cells 2D"}
    spec = Segment2DSpec(membrane=predicted, out=tmp_path / "seg", box=box, show_in_vast=vast)
    result = _run(spec)
    assert [call[0] for call in emulator.calls] == ["ADDNEWLAYER"]
    with VastClient("127.0.0.1", emulator.port) as client:
        layer = client.find_layer("cells 2D")
        count = client.layer_count()
    assert f"cells shown in VAST segmentation layer {layer} 'cells 2D'" in result.summary
    painted = emulator.vast.labels_of("cells 2D").read(0, 3, 0, 512, 0, 512)
    inside = np.zeros(painted.shape, bool)
    inside[1:3, 50:302, 100:400] = True
    assert not painted[~inside].any()  # only where the segmentation was computed
    # The cells are the segmentation's, renumbered 1..N and drawn as 2x2 blocks at mip 0.
    stored = read_label_tiff(tmp_path / "seg" / "labels.tif")[1:3, 25:151, 50:200]
    assert not read_label_tiff(tmp_path / "seg" / "labels.tif")[0].any()  # section 0 is outside the box
    shown = painted[1:3, 50:302, 100:400][:, ::2, ::2]
    assert np.array_equal(shown > 0, stored > 0)
    cells = np.unique(shown[shown > 0])
    assert cells.tolist() == list(range(1, len(cells) + 1)) and len(cells) > 50
    pairs = set(zip(stored[stored > 0].tolist(), shown[shown > 0].tolist()))
    assert len(pairs) == len(cells)  # one VAST id per cell, and one cell per id

    # Segmented again with other settings: the same layer is refreshed, not another added.
    again = spec.model_copy(update={"h": 0.3, "overwrite": True})
    _run(again)
    assert [call[0] for call in emulator.calls] == ["ADDNEWLAYER"]
    with VastClient("127.0.0.1", emulator.port) as client:
        assert client.layer_count() == count and client.find_layer("cells 2D") == layer
    refreshed = emulator.vast.labels_of("cells 2D").read(0, 3, 0, 512, 0, 512)
    fewer = int(refreshed.max())
    assert 0 < fewer < len(cells) and not refreshed[~inside].any()  # deeper basins merge cells; nothing stale is left


def test_more_cells_than_vast_ids_hold_are_refused_before_anything_is_written(emulator, tmp_path):
    # A membrane grid of 2 x 2 px cells: 171 x 171 cells in each of the three sections.
    grid = np.zeros((512, 512), np.uint8)
    grid[2::3] = grid[:, 2::3] = 255
    folder = tmp_path / "grid"
    for z in range(3):
        write_image(folder / f"{z:02d}.png", grid)
    vast = {"port": emulator.port, "layer_name": "tiny cells"}
    spec = Segment2DSpec(membrane=folder, out=tmp_path / "seg", sigma=0, min_size=0, show_in_vast=vast, preview=False)
    with pytest.raises(InputError, match=r"87723 cells, more than the 65535 .*segment a smaller box"):
        _run(spec)
    assert emulator.calls == []  # no layer added, nothing written
    # A smaller box fits (here from the command line, which builds the same spec).
    result = run_cli("segment2d", str(folder), "--out", str(tmp_path / "smaller"), "--sigma", "0", "--min-size", "0",
                     "--box", "0,300,0,300,0,1", "--vast", f"vast://127.0.0.1:{emulator.port}", "--vast-layer", "tiny cells")
    assert result.returncode == 0, result.stderr
    assert "10000 cells shown in VAST segmentation layer 1 'tiny cells'" in result.stdout


def test_a_box_and_sections_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sections or box, not both"):
        Segment2DSpec(membrane=tmp_path, out=tmp_path / "o", sections=(0, 1), box=Box(x0=0, x1=1, y0=0, y1=1, z0=0, z1=1))


def test_a_paint_job_paints_cells_where_the_layer_is_unpainted(emulator, predicted):
    from membraind.jobs.specs import parse_spec

    user = Box(x0=120, x1=160, y0=60, y1=100, z0=1, z1=2)  # a stroke the user painted
    with VastClient("127.0.0.1", emulator.port) as client, client.api_layer(client.find_layer("segmentation")):
        client.write_segmentation(user, np.full(user.shape, 9, np.uint16))
    box = {"x0": 100, "x1": 300, "y0": 50, "y1": 250, "z0": 1, "z1": 2}
    spec = parse_spec({"kind": "vast-paint", "port": emulator.port, "membrane": str(predicted),
                       "segmentation_layer": "segmentation", "target": {"mode": "box", "box": box}, "first_id": 10})  # fmt: skip
    reports = []
    result = run_job(spec, Settings(), reports.append, lambda: False)
    assert re.match(r"painted \d+ voxels in 1 cubes; next free segment id \d+ \(VAST segmentation layer 'segmentation'\)",
                    result.summary)  # fmt: skip
    assert reports[-1].phase == "painting" and reports[-1].fraction == 1.0
    labels = emulator.segmentation.read(0, 3, 0, 512, 0, 512)
    assert (labels[1, 60:100, 120:160] == 9).all()  # the user's stroke is kept
    inside = labels[1, 50:250, 100:300]
    cells = set(np.unique(inside).tolist()) - {0, 9}
    assert len(cells) > 10 and min(cells) == 10
    labels[1, 50:250, 100:300] = 0
    assert not labels.any()  # nothing outside the box

    # Anchors, membrane mode: each cube's membrane as one segment.
    anchors = {"mode": "anchors", "points": [{"x": 50, "y": 50, "z": 0}, {"x": 450, "y": 450, "z": 2}], "cube_xy": 64, "cube_z": 1}
    spec = parse_spec(spec.model_dump(mode="json") | {"target": anchors, "mode": "membrane", "first_id": 2})
    result = run_job(spec, Settings(), no_progress, lambda: False)
    assert "in 2 cubes" in result.summary
    membrane = emulator.segmentation.read(0, 1, 18, 82, 18, 82)
    assert set(np.unique(membrane).tolist()) == {0, 2}
