"""Label PNGs show their classes in colour in any viewer and read back as the classes;
``inspect-gt --preview`` draws the labels over the EM, one picture per section.

Real ISBI 2012 sections, real files, the real command line.
"""

from __future__ import annotations

import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from skimage.measure import label as connected_cells

from membraind.groundtruth.classes import CLASS_COLOURS, INTERIOR, MEMBRANE, THIRD, UNANNOTATED, write_label_image
from membraind.groundtruth.instances import instances_to_membrane
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.vast.groundtruth import export_ground_truth
from membraind.volumes.image_files import read_image
from tests.conftest import run_cli

NUMBERS = (3, 14)


def _isbi_classes(isbi, number: int) -> np.ndarray:
    """ISBI's expert labels as classes, with an unannotated band and a patch of the third class."""
    classes = LabelMapping.preset("isbi").apply(read_image(isbi / "train" / "label" / f"{number:02d}.png"), "isbi")
    classes[:, 400:] = UNANNOTATED
    classes[10:40, 10:40] = THIRD
    return classes


def _palette(path) -> dict[int, tuple[int, int, int]]:
    with Image.open(path) as img:
        assert img.mode == "P", f"{path} is a {img.mode} image, not a palette image"
        colours = np.asarray(img.getpalette("RGB"), np.uint8).reshape(-1, 3)
    return {klass: tuple(int(c) for c in colours[klass]) for klass in CLASS_COLOURS}


def test_a_label_png_keeps_its_classes_and_shows_them_in_colour(isbi, tmp_path):
    classes = _isbi_classes(isbi, NUMBERS[0])
    path = write_label_image(tmp_path / "03.png", classes)
    assert _palette(path) == CLASS_COLOURS
    # The pixel values are the classes for membraind, PIL (Fiji too) and imageio in palette mode.
    np.testing.assert_array_equal(read_image(path), classes)
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), classes)
        shown = np.asarray(img.convert("RGB"))  # what an image viewer shows
    np.testing.assert_array_equal(iio.imread(path, mode="P"), classes)
    for klass in (UNANNOTATED, INTERIOR, MEMBRANE, THIRD):
        assert (shown[classes == klass] == CLASS_COLOURS[klass]).all()
    assert len({CLASS_COLOURS[k] for k in CLASS_COLOURS}) == 4 and CLASS_COLOURS[UNANNOTATED] == (0, 0, 0)


def test_a_gray_palette_image_reads_as_its_gray_levels(isbi, tmp_path):
    """Gray images stored with a palette (0/255 labels, EM) keep their gray values."""
    gray = read_image(isbi / "train" / "label" / "00.png")
    img = Image.fromarray((gray > 127).astype(np.uint8))
    img.putpalette([0, 0, 0, 255, 255, 255])
    img.save(tmp_path / "00.png")
    np.testing.assert_array_equal(read_image(tmp_path / "00.png"), np.where(gray > 127, 255, 0))


def test_converted_and_exported_labels_are_palette_pngs_that_read_back(isbi, tmp_path):
    instances_dir = tmp_path / "instances"
    instances_dir.mkdir()
    expected = {}
    for number in NUMBERS:
        cells = connected_cells(read_image(isbi / "train" / "label" / f"{number:02d}.png") > 127, connectivity=1)
        Image.fromarray(cells.astype(np.uint16)).save(instances_dir / f"{number:02d}.png")
        expected[f"{number:02d}"] = instances_to_membrane(cells.astype(np.uint32), 3)
    converted = run_cli("convert-instances", str(instances_dir), str(tmp_path / "membrane"))
    assert converted.returncode == 0, converted.stderr
    for name, classes in expected.items():
        assert _palette(tmp_path / "membrane" / f"{name}.png") == CLASS_COLOURS
        np.testing.assert_array_equal(read_image(tmp_path / "membrane" / f"{name}.png"), classes)
    skeleton = run_cli("convert-skeleton", str(tmp_path / "membrane"), str(tmp_path / "skeleton"))
    assert skeleton.returncode == 0, skeleton.stderr
    assert _palette(tmp_path / "skeleton" / f"{NUMBERS[0]:02d}.png") == CLASS_COLOURS
    # Ground truth from VAST is written by the same function.
    em = read_image(isbi / "train" / "image" / "03.png")
    _, label_dir = export_ground_truth([GroundTruthImage("vast-z3", em, _isbi_classes(isbi, 3))], tmp_path / "gt")
    assert _palette(label_dir / "vast-z3.png") == CLASS_COLOURS
    np.testing.assert_array_equal(read_image(label_dir / "vast-z3.png"), _isbi_classes(isbi, 3))
    checked = run_cli("inspect-gt", "--em", str(tmp_path / "gt" / "em"), "--labels", str(label_dir))
    assert checked.returncode == 0 and "1 pair(s) OK" in checked.stdout, checked.stderr


@pytest.fixture
def partial_ground_truth(isbi, tmp_path):
    """Two ISBI sections with labels as membraind writes them, partly unannotated."""
    em_dir, label_dir = tmp_path / "em", tmp_path / "labels"
    em_dir.mkdir()
    for number in NUMBERS:
        shutil.copy(isbi / "train" / "image" / f"{number:02d}.png", em_dir / f"{number:02d}.png")
        write_label_image(label_dir / f"{number:02d}.png", _isbi_classes(isbi, number))
    return em_dir, label_dir


def test_inspect_gt_preview_draws_the_labels_over_the_em_per_section(isbi, partial_ground_truth, tmp_path):
    em_dir, label_dir = partial_ground_truth
    result = run_cli("inspect-gt", "--em", str(em_dir), "--labels", str(label_dir), "--preview", str(tmp_path / "look"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "look").iterdir()) == [f"{n:02d}_overlay.png" for n in NUMBERS]
    for number in NUMBERS:
        picture = read_image(tmp_path / "look" / f"{number:02d}_overlay.png")
        assert picture.shape[1:] == (512, 3) and picture.shape[0] > 512  # the section, then its legend
        section = picture[:512].astype(int)
        classes = _isbi_classes(isbi, number)
        em = IntensityNormalization().normalize_section(read_image(isbi / "train" / "image" / f"{number:02d}.png"))
        r, g, b = section[..., 0], section[..., 1], section[..., 2]
        # Unannotated: the plain EM, stretched as the network sees it.
        plain = classes == UNANNOTATED
        assert (r[plain] == g[plain]).all() and (g[plain] == b[plain]).all()
        assert np.abs(g[plain] - np.rint(em[plain] * 255)).max() <= 1
        # Membrane magenta, interior green, the third class orange, each over the EM.
        membrane, interior, third = classes == MEMBRANE, classes == INTERIOR, classes == THIRD
        assert ((r - g)[membrane] > 120).all() and ((b - g)[membrane] > 120).all()
        assert ((g - r)[interior] > 30).all() and ((g - b)[interior] > 20).all()
        assert ((r - b)[third] > 100).all()
        # The EM still shows through: darker EM gives darker labelled pixels.
        dark, light = interior & (em < 0.3), interior & (em > 0.7)
        assert g[dark].mean() + 100 < g[light].mean()
        # The legend names the classes in their colours.
        legend = picture[512:].reshape(-1, 3)
        for klass in (MEMBRANE, INTERIOR, THIRD):
            assert (legend == CLASS_COLOURS[klass]).all(axis=1).sum() > 50
