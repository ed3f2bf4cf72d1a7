"""Where VAST sees the daemon's files: the path mapping, and VAST on Windows (the emulator's Windows mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from membraind.errors import InputError
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.paths import PathMap, local_path, parse_path_map, vast_path
from membraind.vast.protocol import VastError
from membraind.vast.publish import LayerPublisher
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.open_volume import open_volume
from membraind.volumes.tile_store import TileStore
from tests.conftest import run_cli

LAB = r"Z:\lab"


def test_daemon_paths_become_the_paths_vast_sees():
    maps = [parse_path_map(r"/data/lab=Z:\lab"), parse_path_map(r"/data/lab/scratch=\\fileserver\scratch"),
            parse_path_map("/mnt/d=D:\\"), parse_path_map("/srv/em=/Volumes/em")]  # fmt: skip
    assert vast_path("/data/lab/predictions/v1 membrane.vsvi", maps) == r"Z:\lab\predictions\v1 membrane.vsvi"
    assert vast_path("/data/lab/scratch/a.vsvi", maps) == r"\\fileserver\scratch\a.vsvi"  # the longest prefix wins
    assert vast_path("/mnt/d/x/a.vsvi", maps) == r"D:\x\a.vsvi"
    assert vast_path("/srv/em/a.vsvi", maps) == "/Volumes/em/a.vsvi"
    assert vast_path("/home/anna/a.vsvi", []) == "/home/anna/a.vsvi"  # no mapping: VAST on this machine
    with pytest.raises(InputError, match=r"/data/labs/a.vsvi lies outside the folders VAST can see \(/data/lab -> Z:\\lab"):
        vast_path("/data/labs/a.vsvi", maps)  # a sibling that merely shares the prefix's letters
    assert local_path(r"z:\LAB\predictions\a.vsvi", maps) == Path("/data/lab/predictions/a.vsvi")
    for bad, words in (("/data/lab", "DAEMON_FOLDER=VAST_FOLDER"), ("data=Z:\\lab", "relative"), ("/data=lab", "not an absolute")):
        with pytest.raises(InputError, match=words):
            parse_path_map(bad)


@pytest.fixture
def windows_vast(isbi, tmp_path):
    """VAST on a Windows workstation that sees ``tmp_path/lab`` as Z:\\lab."""
    em = tmp_path / "em"
    for z in range(2):
        write_image(em / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{z:02d}.png")[:256, :256])
    lab = tmp_path / "lab"
    lab.mkdir()
    with VastEmulator(open_volume(em), port=0, windows_paths=[PathMap(daemon=lab, vast=LAB)]) as emulator:
        yield emulator, lab


def test_a_layer_reaches_vast_on_windows_through_the_mapping(windows_vast):
    emulator, lab = windows_vast
    store = TileStore(lab / "predictions" / "membrane", (2, 256, 256), tile_size=128, layer_name="membrane ü")
    store.write_tile(1, 0, 1, 0, np.full((128, 128), 200, np.uint8))
    vsvi = store.write_vsvi()
    with VastClient("127.0.0.1", emulator.port) as client:
        with pytest.raises(VastError, match=r"VAST refused LOADLAYER: layer operation failed.*--vast-path DAEMON=VAST"):
            LayerPublisher(client, lab / "layers.json").publish(vsvi)  # the daemon's own path: VAST cannot open it
        publisher = LayerPublisher(client, lab / "layers.json", [PathMap(daemon=lab, vast=LAB)])
        layer = publisher.publish(vsvi)
        assert emulator.calls[-1] == ("LOADLAYER", r"Z:\lab\predictions\membrane\membrane _.vsvi")
        assert client.find_layer("membrane ü") == layer
        assert client.read_em(layer, Box(x0=128, x1=256, y0=0, y1=128, z0=1, z1=2, mip=0)).min() == 200


def test_predicting_from_vast_on_windows_hands_it_windows_paths(windows_vast, trained_bundle):
    emulator, lab = windows_vast
    source = f"vast://127.0.0.1:{emulator.port}/0"
    common = ["predict", source, "--bundle", str(trained_bundle), "--box", "0,128,0,128,0,1"]
    outside = run_cli(*common, "--out", str(lab.parent / "elsewhere"), "--vast-path", f"{lab}={LAB}")
    assert outside.returncode == 2 and "outside the folders VAST can see" in outside.stderr, outside.stderr
    assert "tiles predicted" not in outside.stdout  # refused before any work
    result = run_cli(*common, "--out", str(lab / "pred"), "--vast-path", f"{lab}={LAB}")
    assert result.returncode == 0, result.stderr
    (load,) = [call for call in emulator.calls if call[0] == "LOADLAYER"]
    assert load[1].startswith(LAB + "\\pred\\") and load[1].endswith(".vsvi") and "/" not in load[1]
