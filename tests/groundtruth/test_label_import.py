"""Importing EM and labels: pairing by name, label mappings, and clear errors on bad input."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from membraind.errors import InputError
from membraind.groundtruth.label_mapping import LabelMapping, decode_instance_ids, parse_mapping
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


def _erase(labels, gray, names=("00", "01", "02")):
    """Paint the right half of each label file with ``gray``, as a user erasing it."""
    for name in names:
        label = read_image(labels / f"{name}.png").copy()
        label[:, 256:] = gray
        write_image(labels / f"{name}.png", label)


def test_erasing_isbi_labels_with_black_warns_that_the_erased_area_is_membrane(tmp_path, isbi):
    """Issue 22 item 1: black is membrane with `isbi`, so black erasing gave "100% annotated, 84% membrane, OK"."""
    em, labels = _small_set(tmp_path, isbi)
    _erase(labels, 0)
    result = run_cli("inspect-gt", "--em", str(em), "--labels", str(labels), "--mapping", "isbi")
    assert result.returncode == 0, result.stderr  # a warning, not an error
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3, result.stderr
    share = round(100 * load_ground_truth(em, labels, LabelMapping.preset("isbi"))[0].membrane_fraction)
    assert share > 50
    assert f"{labels / '00.png'}: {share}% of the annotated pixels are membrane" in warnings[0]
    assert "erased parts of it with gray 0" in warnings[0]  # the likely cause
    assert "--mapping 0=2,128=0,255=1" in warnings[0]  # and the fix
    assert "pair(s) OK" not in result.stdout
    assert "3 pair(s) read; 3 with too much membrane to be right" in result.stdout
    assert result.stdout.count("<- see warning") == 3


def test_isbi_labels_do_not_warn(isbi):
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    assert [gt.warning for gt in images] == [None] * 30


def test_unmapped_erase_value_gets_a_mapping_that_reads_it_not_the_one_in_use(tmp_path, isbi):
    """Issue 22 item 1: the error for an erase value suggested `--mapping isbi`, the mapping already in use."""
    em, labels = _small_set(tmp_path, isbi)
    _erase(labels, 128)
    refused = run_cli("inspect-gt", "--em", str(em), "--labels", str(labels), "--mapping", "isbi")
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert "holds values outside the label mapping (128; 131072 pixels)" in message
    assert "--mapping isbi" not in message
    suggested = re.search(r"read it as not annotated: --mapping (\S+)$", message)
    assert suggested and suggested.group(1) == "0=2,128=0,255=1", message
    followed = run_cli("inspect-gt", "--em", str(em), "--labels", str(labels), "--mapping", suggested.group(1))
    assert followed.returncode == 0, followed.stderr
    assert "WARNING" not in followed.stderr and "3 pair(s) OK" in followed.stdout
    rows = {line.split()[0]: line.split() for line in followed.stdout.splitlines() if line.startswith("0")}
    assert {row[2] for row in rows.values()} == {"50.0%"}  # half of each section annotated
    images = load_ground_truth(em, labels, LabelMapping(values={0: 2, 128: 0, 255: 1}))
    assert all(np.count_nonzero(gt.labels[:, 256:]) == 0 for gt in images)


def test_files_of_another_convention_get_the_presets_that_read_them(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi)
    with pytest.raises(InputError) as info:
        load_ground_truth(em, labels, LabelMapping.preset("classes"))  # ISBI files read with the default
    message = str(info.value)
    assert "the mapping in use (classes: 0=0,1=1,2=2,3=3) does not name them" in message
    assert "--mapping isbi (0 membrane, 255 interior) or membrain-patches-2 (0 interior, 255 membrane)" in message


def test_instance_ids_read_as_classes_point_to_convert_instances(tmp_path, isbi):
    em, labels = _small_set(tmp_path, isbi, names=("00",))
    ids, count = ndimage.label(read_image(labels / "00.png") == 255)
    write_image(labels / "00.png", ids.astype(np.uint16))
    with pytest.raises(InputError, match=rf"{count + 1} different values look like instance labels .*convert-instances"):
        load_ground_truth(em, labels, LabelMapping.preset("classes"))


def test_inspect_gt_says_what_each_share_is_a_share_of(isbi):
    result = run_cli("inspect-gt", "--em", str(isbi / "train" / "image"), "--labels", str(isbi / "train" / "label"),
                     "--mapping", "isbi")  # fmt: skip
    heading, under = result.stdout.splitlines()[:2]
    assert heading.split() == ["section", "size", "annotated", "membrane"]
    assert under.split() == ["of", "pixels", "of", "annotated"]
    assert under.index("of pixels") + len("of pixels") == heading.index("annotated") + len("annotated")
    assert under.index("of annotated") + len("of annotated") == heading.index("membrane") + len("membrane")


@pytest.mark.parametrize(
    ("text", "values"),
    [("isbi", {255: 1, 0: 2}), ("0=2,255=1,128=0", {0: 2, 255: 1, 128: 0}), (" 0 = 2 , 255=1 ", {0: 2, 255: 1})],
)
def test_a_mapping_is_a_preset_or_gray_class_pairs(text, values):
    assert parse_mapping(text).values == values
    assert parse_mapping(parse_mapping(text).text()).values == values  # the suggested form reads back


BAD_MAPPINGS = {
    "0=2,255=x": "'255=x' is not two whole numbers GRAY=CLASS",
    "0=2,255=7": "in '255=7', 7 is no class; the classes are 0 unannotated, 1 interior, 2 membrane, 3 third",
    "0=2,0=1": "gray value 0 is given twice",
    "0=2,,255=1": "'' is not GRAY=CLASS",
    "0=2=1": "'0=2=1' is not GRAY=CLASS",
    "-1=0": "gray value -1 is negative",
    "isbl": "unknown label mapping 'isbl'; choose one of isbi, classes",
}


@pytest.mark.parametrize("text", BAD_MAPPINGS)
def test_a_bad_mapping_names_the_bad_part(text):
    with pytest.raises(ValueError) as info:
        parse_mapping(text)
    assert BAD_MAPPINGS[text] in str(info.value)


@pytest.mark.parametrize(
    "command",
    [
        ["inspect-gt", "--em", "em", "--labels", "labels"],
        ["preview-patches", "--em", "em", "--labels", "labels"],
        ["train", "--em", "em", "--labels", "labels", "--out", "run"],
        ["finetune", "--em", "em", "--labels", "labels", "--out", "run", "--from", "bundle"],
        ["evaluate", "bundle", "--em", "em", "--labels", "labels"],
        ["convert-skeleton", "labels", "skeleton"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_that_reads_labels_takes_the_same_mapping_forms(tmp_path, command):
    result = run_cli(*command, "--mapping", "0=2,255=7", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --mapping: label mapping '0=2,255=7': in '255=7', 7 is no class" in result.stderr
    result = run_cli(*command, "--mapping", "0=2,255=1,128=0", cwd=tmp_path)
    assert "argument --mapping" not in result.stderr  # accepted; the missing folders fail next
    assert result.returncode == 2 and "membraind: error:" in result.stderr


def test_a_training_job_reads_gray_class_pairs_as_the_command_line_does(tmp_path, isbi):
    from membraind.config import Settings
    from membraind.jobs.execute import training_data
    from membraind.jobs.specs import TrainSpec

    em, labels = _small_set(tmp_path, isbi)
    _erase(labels, 128)
    spec = TrainSpec(em=em, labels=labels, mapping="0=2,255=1,128=0", out=tmp_path / "run")
    data = training_data(spec, Settings())
    assert len(data.train) == 2 and len(data.validation) == 1
    for gt in data.train + data.validation:
        assert not gt.labels[:, 256:].any() and gt.labels[:, :256].all()  # erased half unannotated, the rest painted
    assert data.sources[0]["mapping"] == {0: 2, 255: 1, 128: 0}
