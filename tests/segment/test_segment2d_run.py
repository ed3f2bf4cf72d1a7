"""Segmenting a membrane volume into a VAST segmentation layer and a label TIFF, end to end.

The membrane volume is a folder of 8-bit PNG sections made from ISBI expert membranes
(see ``standin_probability`` in test_segment2d.py), and, for the prediction chain, the
tile store a trained network writes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.measure import label

from membraind.errors import InputError
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.predict.request import PredictRequest
from membraind.predict.run import run_prediction
from membraind.predict.settings import PredictSettings
from membraind.segment.instances import segment_section
from membraind.segment.label_tiff import read_label_tiff
from membraind.segment.metrics import fill_boundary, score_segmentation
from membraind.segment.preview import ALPHA
from membraind.segment.run import MANIFEST_NAME, SegmentationCancelled, run_segmentation
from membraind.segment.settings import Segment2DSettings
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.open_volume import open_volume
from membraind.volumes.vsvi import parse_vsvi
from tests.conftest import run_cli
from tests.segment.test_segment2d import standin_probability

NUMBERS = (25, 26, 27)


@pytest.fixture(scope="module")
def membrane_folder(isbi, tmp_path_factory):
    """Three 8-bit membrane-probability sections and their true cells."""
    folder = tmp_path_factory.mktemp("membrane")
    truths = []
    for z, number in enumerate(NUMBERS):
        membrane = read_image(isbi / "train" / "label" / f"{number:02d}.png") < 128
        probability = standin_probability(membrane, number)
        write_image(folder / f"{z:03d}.png", np.rint(probability * 255).astype(np.uint8))
        truths.append(label(~membrane, connectivity=1))
    return folder, truths


def _store_ids(out):
    (vsvi_path,) = (out / "segmentation").glob("*.vsvi")
    volume = open_volume(vsvi_path)
    return vsvi_path, volume


def test_volume_becomes_vast_layer_and_label_tiff_with_unique_ids(membrane_folder, tmp_path):
    folder, truths = membrane_folder
    report = run_segmentation(folder, tmp_path / "cells", Segment2DSettings())
    assert report.sections == 3 and report.skipped == 0
    labels = read_label_tiff(tmp_path / "cells" / "labels.tif")
    assert labels.shape == (3, 512, 512) and labels.dtype == np.uint32
    # Each section is the section-wise segmentation, renumbered after the previous ones.
    ids_per_section = [set(np.unique(section)) - {0} for section in labels]
    assert all(not (a & b) for i, a in enumerate(ids_per_section) for b in ids_per_section[i + 1 :])
    assert sorted(set().union(*ids_per_section)) == list(range(1, report.segments + 1))
    for z, (section, truth) in enumerate(zip(labels, truths)):
        alone = segment_section(read_image(folder / f"{z:03d}.png"))
        assert np.array_equal(section > 0, alone > 0)
        assert score_segmentation(section, truth).adapted_rand < 0.15
    # The VAST layer: a .vsvi as VAST writes them, with RGB tiles that decode to the same ids.
    vsvi_path, volume = _store_ids(tmp_path / "cells")
    descriptor = parse_vsvi(vsvi_path).model_dump()
    assert descriptor["SourceBytesPerPixel"] == 3 and descriptor["SourceMaxS"] == 2
    assert descriptor["TargetLayerName"] == "cells" and parse_vsvi(vsvi_path).TargetDataSizeX == 512
    tile = read_image(tmp_path / "cells" / "segmentation" / "mip0" / "Sect_000001" / "sect_000001_r0_c0.png")
    assert tile.shape == (1024, 1024, 3) and tile.dtype == np.uint8  # a full VAST tile, RGB-encoded ids
    rgb = volume.read(volume.bounds(0))
    decoded = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    assert np.array_equal(decoded, labels)


def test_interrupted_segmentation_resumes_with_the_same_numbering(membrane_folder, tmp_path):
    folder, _ = membrane_folder
    whole = run_segmentation(folder, tmp_path / "whole", Segment2DSettings())
    asked = []

    def cancel_after_first() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(SegmentationCancelled, match="run it again to resume"):
        run_segmentation(folder, tmp_path / "resumed", Segment2DSettings(), cancel=cancel_after_first)
    manifest = json.loads((tmp_path / "resumed" / MANIFEST_NAME).read_text())
    assert list(manifest["sections"]) == ["0"]
    report = run_segmentation(folder, tmp_path / "resumed", Segment2DSettings())
    assert report.sections == 2 and report.skipped == 1 and report.segments == whole.segments
    assert np.array_equal(
        read_label_tiff(tmp_path / "resumed" / "labels.tif"), read_label_tiff(tmp_path / "whole" / "labels.tif")
    )


def test_other_settings_in_the_same_folder_need_overwrite(membrane_folder, tmp_path):
    folder, _ = membrane_folder
    run_segmentation(folder, tmp_path / "cells", Segment2DSettings(), sections=range(0, 1))
    with pytest.raises(InputError, match="settings differ.*--overwrite"):
        run_segmentation(folder, tmp_path / "cells", Segment2DSettings(h=0.1), sections=range(0, 1))
    report = run_segmentation(folder, tmp_path / "cells", Segment2DSettings(h=0.1), sections=range(0, 1), overwrite=True)
    assert report.sections == 1
    with pytest.raises(InputError, match="not within"):
        run_segmentation(folder, tmp_path / "cells", Segment2DSettings(h=0.1), sections=range(2, 5))
    with pytest.raises(InputError, match="mip 20"):
        run_segmentation(folder, tmp_path / "other", Segment2DSettings(), mip=20)


def test_prediction_then_segmentation_from_the_command_line(isbi, trained_bundle, tmp_path):
    """The chain a user runs: predict a volume, then segment the predicted layer."""
    em = tmp_path / "em"
    for z in range(2):
        write_image(em / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{25 + z:02d}.png"))
    run_prediction(
        PredictRequest(volume=em, bundles=[trained_bundle], out=tmp_path / "pred", target={"mode": "volume"}),
        PredictSettings(),
    )
    (membrane,) = (tmp_path / "pred").glob("*/membrane")
    result = run_cli("segment2d", str(membrane), "--out", str(tmp_path / "seg"), "--h", "0.05")
    assert result.returncode == 0, result.stderr
    assert "2 sections segmented" in result.stdout and "labels.tif" in result.stdout
    assert read_label_tiff(tmp_path / "seg" / "labels.tif").max() > 10
    again = run_cli("segment2d", str(membrane), "--out", str(tmp_path / "seg"), "--h", "0.05")
    assert again.returncode == 0 and "0 sections segmented, 2 already done" in again.stdout
    bad = run_cli("segment2d", str(membrane), "--out", str(tmp_path / "seg"), "--h", "2")
    assert bad.returncode == 2 and "h" in bad.stderr and "Traceback" not in bad.stderr


def _touching(ids: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of cells that touch or face each other across boundary pixels."""
    filled = fill_boundary(ids)
    pairs = set()
    for a, b in ((filled[:, :-1], filled[:, 1:]), (filled[:-1], filled[1:])):
        differ = a != b
        pairs |= {tuple(sorted(p)) for p in zip(a[differ].tolist(), b[differ].tolist())}
    return pairs


def test_preview_shows_every_cell_over_the_em_in_a_colour_its_neighbours_lack(isbi, membrane_folder, tmp_path):
    folder, _ = membrane_folder
    em_dir = tmp_path / "em"
    for z, number in enumerate(NUMBERS):
        write_image(em_dir / f"{z:03d}.png", read_image(isbi / "train" / "image" / f"{number:02d}.png"))
    result = run_cli("segment2d", str(folder), "--out", str(tmp_path / "cells"), "--em", str(em_dir))
    assert result.returncode == 0, result.stderr
    assert f"output: {tmp_path / 'cells' / 'preview'}" in result.stdout
    previews = sorted((tmp_path / "cells" / "preview").iterdir())
    assert [p.name for p in previews] == ["section_000000.png", "section_000001.png", "section_000002.png"]
    labels = read_label_tiff(tmp_path / "cells" / "labels.tif")
    for z, (path, ids) in enumerate(zip(previews, labels)):
        picture = read_image(path)
        assert picture.shape[1:] == (512, 3) and picture.shape[0] > 512  # the section, then a legend
        section = picture[:512].astype(np.float32)
        em = np.rint(IntensityNormalization().normalize_section(read_image(em_dir / f"{z:03d}.png")) * 255)
        boundary = ids == 0
        assert np.abs(section[boundary] - em[boundary][:, None]).max() <= 1  # plain EM
        # Every cell is tinted with one colour over the EM (recovered by removing the EM).
        tints = (section - (1 - ALPHA) * em[..., None]) / ALPHA
        cells = np.unique(ids[ids > 0])
        colour = {}
        for cell in cells:
            pixels = tints[ids == cell]
            assert np.abs(pixels - pixels.mean(axis=0)).max() < 3, f"cell {cell} of section {z} is not one colour"
            colour[int(cell)] = pixels.mean(axis=0)
        assert all(np.ptp(c) > 100 for c in colour.values())  # a colour, not a gray
        touching = _touching(ids)
        assert len(touching) > 2 * len(cells)
        for a, b in touching:
            assert np.linalg.norm(colour[a] - colour[b]) > 80, f"cells {a} and {b} of section {z} look alike"
    # Without --em the cells lie over the membrane probability; --no-preview writes none.
    plain = run_cli("segment2d", str(folder), "--out", str(tmp_path / "plain"), "--sections", "1")
    assert plain.returncode == 0 and [p.name for p in (tmp_path / "plain" / "preview").iterdir()] == ["section_000001.png"]
    bare = run_cli("segment2d", str(folder), "--out", str(tmp_path / "bare"), "--sections", "1", "--no-preview")
    assert bare.returncode == 0 and not (tmp_path / "bare" / "preview").exists()
    wrong = run_cli("segment2d", str(folder), "--out", str(tmp_path / "wrong"), "--em", str(isbi / "test" / "image"))
    assert wrong.returncode == 2 and "30 sections" in wrong.stderr and "--em" in wrong.stderr, wrong.stderr


def test_evaluation_scores_cells_only_where_labels_are_complete(isbi):
    from membraind.groundtruth.classes import INTERIOR, MEMBRANE, UNANNOTATED
    from membraind.nn.evaluate import score_instances

    membrane = read_image(isbi / "train" / "label" / "26.png") < 128
    truth = np.where(membrane, MEMBRANE, INTERIOR).astype(np.uint8)
    scores = score_instances(standin_probability(membrane, 26), truth, Segment2DSettings())
    assert scores is not None and scores.vi < 1 and scores.adapted_rand < 0.15
    truth[:10] = UNANNOTATED  # painted regions do not delimit cells
    assert score_instances(standin_probability(membrane, 26), truth, Segment2DSettings()) is None
