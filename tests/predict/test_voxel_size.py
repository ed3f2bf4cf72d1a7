"""The voxel size from training to VAST: recorded in the bundle, written into every .vsvi.

A tiny network is trained from the command line on real ISBI sections saved as ImageJ
TIFFs that record ISBI's voxel size (4 x 4 x 50 nm); predictions from PNG and TIFF
sections then show where the voxel size of their .vsvi comes from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.vsvi import parse_vsvi
from tests.conftest import run_cli
from tests.nn.test_training import TINY


def _imagej_tiff(path: Path, image: np.ndarray, xy_nm: float, z_nm: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, imagej=True, resolution=(1000 / xy_nm, 1000 / xy_nm),
                     metadata={"unit": "micron", "spacing": z_nm / 1000})  # fmt: skip


@pytest.fixture(scope="module")
def sections(isbi) -> list[np.ndarray]:
    return [read_image(isbi / "train" / "image" / f"{z:02d}.png") for z in range(2)]


@pytest.fixture(scope="module")
def run(isbi, sections, tmp_path_factory) -> Path:
    """A run trained on TIFFs that record 4 x 4 x 50 nm voxels."""
    tmp = tmp_path_factory.mktemp("voxel-run")
    labels = tmp / "labels"
    labels.mkdir()
    for z, image in enumerate(sections):
        _imagej_tiff(tmp / "em" / f"{z:02d}.tif", image, 4.0, 50.0)
        shutil.copy(isbi / "train" / "label" / f"{z:02d}.png", labels / f"{z:02d}.png")
    trained = run_cli("train", "--em", str(tmp / "em"), "--labels", str(labels), "--mapping", "isbi",
                      "--out", str(tmp / "run"), "--epochs", "1", env=TINY)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    return tmp / "run"


def _predict(volume: Path, run: Path, out: Path, *options: str):
    result = run_cli("predict", str(volume), "--bundle", str(run / "model"), "--out", str(out), *options)
    assert result.returncode == 0, result.stderr
    (vsvi,) = out.glob("*/membrane/*.vsvi")
    d = parse_vsvi(vsvi)
    return (d.TargetVoxelSizeXnm, d.TargetVoxelSizeYnm, d.TargetVoxelSizeZnm), result.stdout


def _pngs(sections: list[np.ndarray], folder: Path) -> Path:
    write_image(folder / "s0.png", sections[0])
    return folder


def test_training_records_the_voxel_size_of_its_em_in_the_bundle(run):
    metadata = json.loads((run / "model" / "model.json").read_text())
    assert metadata["voxel_size_nm"] == pytest.approx([4.0, 4.0, 50.0])


def test_the_voxel_size_option_lands_in_the_vsvi(run, sections, tmp_path):
    voxel, stdout = _predict(_pngs(sections, tmp_path / "em"), run, tmp_path / "out", "--voxel-size", "4.5,4.5,45")
    assert voxel == (4.5, 4.5, 45.0)
    assert "records no voxel size" not in stdout and "warning" not in stdout
    bad = run_cli("predict", str(tmp_path / "em"), "--bundle", str(run / "model"), "--out", str(tmp_path / "bad"),
                  "--voxel-size", "4,4")  # fmt: skip
    assert bad.returncode == 2 and "--voxel-size: a voxel size is X,Y,Z in nm" in bad.stderr


def test_tiff_resolution_tags_reach_the_vsvi_without_the_option(run, sections, tmp_path):
    em = tmp_path / "em"
    em.mkdir()
    tifffile.imwrite(em / "s0.tif", sections[0], resolution=(2.5e6, 2.5e6), resolutionunit="CENTIMETER")
    voxel, stdout = _predict(em, run, tmp_path / "out")
    assert voxel == pytest.approx((4.0, 4.0, 4.0))  # the tags hold x and y only: z = x
    assert "warning" not in stdout


def test_a_source_that_records_none_takes_the_bundles_and_says_so(run, sections, tmp_path):
    voxel, stdout = _predict(_pngs(sections, tmp_path / "em"), run, tmp_path / "out")
    assert voxel == pytest.approx((4.0, 4.0, 50.0))
    assert "records no voxel size; the outputs' .vsvi takes the one model run was trained at (4 x 4 x 50 nm)" in stdout


def test_pixels_finer_than_the_training_data_are_warned_about(run, sections, tmp_path):
    _imagej_tiff(tmp_path / "em" / "s0.tif", sections[0], 2.0, 50.0)
    voxel, stdout = _predict(tmp_path / "em", run, tmp_path / "out")
    assert voxel == pytest.approx((2.0, 2.0, 50.0))
    assert f"warning: at mip 0 the EM's pixels are 2 x 2 nm (from the resolution tags of {tmp_path / 'em' / 's0.tif'})" in stdout
    assert "trained on 4 x 4 nm pixels" in stdout and "--mip 1" in stdout
