"""Importing EM and labels: pairing by name, label mappings, and clear errors on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from membraind.errors import InputError
from membraind.groundtruth.label_mapping import LabelMapping, decode_instance_ids
from membraind.groundtruth.pairs import load_ground_truth
from membraind.volumes.image_files import read_image, write_image
from tests.conftest import run_cli


def test_isbi_import_gives_17_to_27_percent_membrane(isbi):
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    assert [gt.name for gt in images] == [f"{i:02d}" for i in range(30)]
    for gt in images:
        assert gt.em.shape == gt.labels.shape == (512, 512)
        assert set(np.unique(gt.labels)) == {1, 2}
        # The data set's README gives whole percents: 17-27% (section 29 has 16.75%).
        assert 17 <= round(100 * gt.membrane_fraction) <= 27, (gt.name, gt.membrane_fraction)


def _small_set(tmp_path, isbi, names=("00", "01", "02")):
    em, labels = tmp_path / "em", tmp_path / "labels"
    em.mkdir()
    labels.mkdir()
    for name in names:
        shutil.copy(isbi / "train" / "image" / f"{name}.png", em / f"{name}.png")
        shutil.copy(isbi / "train" / "label" / f"{name}.png", labels / f"{name}.png")
    return em, labels


def test_pairs_by_name_not_listing_order(tmp_path, isbi):
    em, labels = tmp_path / "em", tmp_path / "labels"
    em.mkdir()
    labels.mkdir()
    # Names whose label files sort in another order than the EM files, with a suffix.
    for em_name, src in (("b_section", "00"), ("a_section", "01"), ("c_section", "02")):
        shutil.copy(isbi / "train" / "image" / f"{src}.png", em / f"{em_name}.png")
        shutil.copy(isbi / "train" / "label" / f"{src}.png", labels / f"{em_name}_label.png")
    shutil.move(labels / "a_section_label.png", labels / "a_section.png")
    images = load_ground_truth(em, labels, LabelMapping.preset("isbi"))
    for gt in images:
        src = {"b_section": "00", "a_section": "01", "c_section": "02"}[gt.name]
        expected = read_image(isbi / "train" / "label" / f"{src}.png")
        assert np.array_equal(gt.labels == 2, expected == 0)
        assert np.array_equal(gt.em, read_image(isbi / "train" / "image" / f"{src}.png"))


def test_multipage_tiff_stacks_import(tmp_path, isbi):
    em = np.stack([read_image(isbi / "train" / "image" / f"{i:02d}.png") for i in range(3)])
    labels = np.stack([read_image(isbi / "train" / "label" / f"{i:02d}.png") for i in range(3)])
    tifffile.imwrite(tmp_path / "em.tif", em, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    images = load_ground_truth(tmp_path / "em.tif", tmp_path / "labels.tif", LabelMapping.preset("isbi"))
    assert len(images) == 3
    assert np.array_equal(images[2].em, em[2])
    assert np.array_equal(images[2].labels == 2, labels[2] == 0)


def test_rgb_instance_labels_decode_to_ids():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    rgb[1, 1] = (255, 255, 255)
    ids = decode_instance_ids(rgb)
    assert ids[0, 0] == 1 * 65536 + 2 * 256 + 3
    assert ids[1, 1] == 2**24 - 1
    assert ids[0, 1] == 0


def test_membrain_class_labels_import_as_they_are(tmp_path):
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    assert np.array_equal(LabelMapping.preset("classes").apply(labels, "x.png"), labels)
    patches = np.array([[0, 255]], np.uint8)
    assert np.array_equal(LabelMapping.preset("membrain-patches-2").apply(patches, "x.png"), [[1, 2]])


def test_missing_label_file_names_it(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    (labels / "01.png").unlink()
    with pytest.raises(InputError, match=r"no label .* for 1 EM section.*01\.png"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


def test_extra_label_file_names_it(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    (em / "02.png").unlink()
    with pytest.raises(InputError, match=r"without an EM section.*02\.png"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


def test_size_mismatch_names_both_files(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    write_image(labels / "01.png", read_image(labels / "01.png")[:500])
    with pytest.raises(InputError, match=r"size mismatch: EM .*01\.png is 512x512 px but label .*01\.png is 512x500"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


def test_unreadable_image_names_the_file(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    (labels / "02.png").write_text("this is not a PNG")
    with pytest.raises(InputError, match=r"cannot read .*02\.png as an image"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


def test_values_outside_mapping_are_listed(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    label = read_image(labels / "00.png").copy()
    label[:10, :10] = 17
    write_image(labels / "00.png", label)
    with pytest.raises(InputError, match=r"00\.png holds values outside the label mapping \(17; 100 pixels\)"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


def test_rgb_em_is_refused(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    gray = read_image(em / "00.png")
    write_image(em / "00.png", np.stack([gray] * 3, axis=-1))
    with pytest.raises(InputError, match=r"EM image .*00\.png has 3 colour channels; EM must be grayscale"):
        load_ground_truth(em, labels, LabelMapping.preset("isbi"))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda em, labels: (labels / "01.png").unlink(), "no label in"),
        (lambda em, labels: (labels / "notes.txt").write_text("x"), "not PNG or TIFF images: notes.txt"),
        (lambda em, labels: (labels / "02.png").write_bytes(b"\x89PNG broken"), "cannot read"),
        (
            lambda em, labels: write_image(em / "00.png", np.zeros((512, 512, 3), np.uint8)),
            "has 3 colour channels",
        ),
        (
            lambda em, labels: write_image(labels / "00.png", np.full((512, 512), 7, np.uint8)),
            "outside the label mapping (7;",
        ),
    ],
    ids=["missing-file", "non-image-file", "unreadable-file", "rgb-em", "value-outside-mapping"],
)
def test_bad_input_gives_one_clear_line_not_a_traceback(tmp_path, isbi, damage, expected):
    em, labels = _small_set(tmp_path, isbi)
    damage(em, labels)
    result = run_cli("inspect-gt", "--em", str(em), "--labels", str(labels), "--mapping", "isbi")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("membraind: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_inspect_gt_reports_isbi_pairs(isbi):
    result = run_cli("inspect-gt", "--em", str(isbi / "train" / "image"), "--labels", str(isbi / "train" / "label"),
                     "--mapping", "isbi")
    assert result.returncode == 0, result.stderr
    assert "30 pair(s) OK" in result.stdout
