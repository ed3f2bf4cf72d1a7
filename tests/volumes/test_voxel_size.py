"""Voxel sizes: the one parser of the command line and request files, and what TIFF files and .vsvi files record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from membraind.jobs.specs import parse_spec
from membraind.volumes.image_files import read_image
from membraind.volumes.open_volume import open_volume
from membraind.volumes.tile_store import TileStore
from membraind.volumes.voxel_size import parse_voxel_size, recorded_voxel_size, tiff_voxel_size


@pytest.fixture(scope="module")
def section(isbi) -> np.ndarray:
    return read_image(isbi / "train" / "image" / "03.png")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4,4,30", (4.0, 4.0, 30.0)), ("4x4x30", (4.0, 4.0, 30.0)), (" 3.5, 3.5 ,40 ", (3.5, 3.5, 40.0)),
     ("8", (8.0, 8.0, 8.0)), (8, (8.0, 8.0, 8.0)), ([8], (8.0, 8.0, 8.0)), ([4, 4, 30], (4.0, 4.0, 30.0))],
)  # fmt: skip
def test_every_form_of_a_voxel_size(text, expected):
    assert parse_voxel_size(text) == expected


@pytest.mark.parametrize("bad", ["4,4", "4,4,30,1", "0", "-4", "a,b,c", "", True, [4, "x", 4], "nan"])
def test_a_wrong_voxel_size_says_how_to_write_one(bad):
    with pytest.raises(ValueError, match=r"X,Y,Z in nm \(e.g. 4,4,30\) or one number for cubic voxels"):
        parse_voxel_size(bad)


def test_request_files_read_the_same_forms():
    base = {"kind": "predict", "volume": "/em", "bundles": ["/model"], "out": "/out"}
    assert parse_spec({**base, "voxel_size_nm": [4, 4, 30]}).voxel_size_nm == (4.0, 4.0, 30.0)
    assert parse_spec(json.dumps({**base, "voxel_size_nm": 8})).voxel_size_nm == (8.0, 8.0, 8.0)
    train = {"kind": "train", "em": "/em", "labels": "/labels", "out": "/run", "voxel_size_nm": "5"}
    assert parse_spec(train).voxel_size_nm == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="voxel_size_nm"):
        parse_spec({**base, "voxel_size_nm": [4, 4]})


def test_tiff_resolution_tags_give_the_pixel_size(section, tmp_path):
    # 2.5 million pixels per centimetre: 4 nm pixels; z unknown, so cubic.
    tifffile.imwrite(tmp_path / "cm.tif", section, resolution=(2.5e6, 2.5e6), resolutionunit="CENTIMETER")
    size, where = tiff_voxel_size(tmp_path / "cm.tif")
    assert size == pytest.approx((4.0, 4.0, 4.0)) and where == f"the resolution tags of {tmp_path / 'cm.tif'}"
    # ImageJ: pixels per micron in the tags, unit and z spacing in the description.
    stack = np.stack([section, section])
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.0038, 1 / 0.005),
                     metadata={"unit": "micron", "spacing": 0.05})  # fmt: skip
    size, _ = tiff_voxel_size(tmp_path / "ij.tif", page=1)
    assert size == pytest.approx((3.8, 5.0, 50.0))


def test_tiffs_without_a_physical_resolution_record_none(section, tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", section)  # tifffile writes 1 pixel per "no unit"
    tifffile.imwrite(tmp_path / "print.tif", section, resolution=(300, 300), resolutionunit="INCH")  # 300 dpi
    assert tiff_voxel_size(tmp_path / "plain.tif") is None
    assert tiff_voxel_size(tmp_path / "print.tif") is None


def test_volumes_say_where_their_voxel_size_came_from(section, isbi, tmp_path):
    tifs = tmp_path / "tifs"
    tifs.mkdir()
    for z in range(2):
        tifffile.imwrite(tifs / f"s{z}.tif", section, resolution=(2.5e6, 2.5e6), resolutionunit="CENTIMETER")
    volume = open_volume(tifs)
    assert volume.voxel_size == pytest.approx((4.0, 4.0, 4.0)) and "s0.tif" in volume.voxel_size_origin
    assert open_volume(tifs, (5, 5, 40)).voxel_size == (5.0, 5.0, 40.0)  # given: wins over the tags
    assert recorded_voxel_size(tifs)[0] == pytest.approx((4.0, 4.0, 4.0))
    pngs = open_volume(isbi / "train" / "image")
    assert pngs.voxel_size == (1.0, 1.0, 1.0) and pngs.voxel_size_origin is None and recorded_voxel_size(pngs.path) is None

    for voxel, recorded in (((4, 4, 30), True), ((1, 1, 1), False)):  # 1 x 1 x 1 nm stands for "unknown"
        store = TileStore(tmp_path / f"store{voxel[0]}", (1, 64, 64), voxel, tile_size=64)
        store.write_tile(0, 0, 0, 0, section[:64, :64])
        read = open_volume(store.write_vsvi())
        assert read.voxel_size == tuple(map(float, voxel)) and (read.voxel_size_origin is not None) == recorded
