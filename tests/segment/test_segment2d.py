"""2D instance segmentation: watershed on membrane probability, windows, metrics, label TIFFs.

Real-data checks use ISBI 2012 evaluation sections (25-29). Their expert membrane maps,
blurred, with faint stretches, organelle-like blobs and pixel noise from a fixed seed,
stand in for a network's membrane probability, so no network is needed. Ground-truth
cells are the 4-connected components of the labelled interior.

Measured with the defaults (h 0.03, sigma 1.0, threshold 0.5, min_size 30) on sections
25-29: VI split 0.03-0.10, merge 0.006-0.25 bits, adapted Rand error 0.002-0.084, against
baselines of VI merge ~5.2 bits / Rand 0.91 (one segment) and VI split ~12.5 bits / Rand
1.0 (every pixel its own segment).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage
from skimage.measure import label

from membraind.errors import InputError
from membraind.segment.instances import _cuts, _windows, remove_small_segments, segment_section
from membraind.segment.label_tiff import read_label_tiff, write_label_tiff
from membraind.segment.metrics import (
    adapted_rand_error,
    fill_boundary,
    score_segmentation,
    variation_of_information,
)
from membraind.segment.settings import Segment2DSettings
from membraind.volumes.image_files import read_image

EVALUATION = (25, 26, 27, 28, 29)


def _unit_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (field - field.min()) / (field.max() - field.min())


def standin_probability(membrane: np.ndarray, seed: int) -> np.ndarray:
    """A network-like membrane probability made from a true membrane mask.

    Calibrated on a network trained on sections 0-24 (``docs/benchmarks.md``): inside
    cells about 0.03 +- 0.09 (network 0.013 +- 0.076), on membrane about 0.71 (0.78).
    """
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(membrane.astype(np.float32), 1.5)
    p /= np.percentile(p[membrane], 90)
    p *= np.clip(1.6 * _unit_field(rng, membrane.shape, 16) - 0.2, 0.2, 1.0)  # faint stretches
    dots = (rng.random(membrane.shape) < 0.0005).astype(np.float32)
    blob = ndimage.gaussian_filter(np.pad([[1.0]], 16), 4.0).max()
    p += 0.5 * ndimage.gaussian_filter(dots, 4.0) / blob  # organelle-like false positives
    noise = ndimage.gaussian_filter(rng.normal(size=membrane.shape), 1.0)
    logit = 12 * (p - 0.4) + 0.5 * noise / noise.std()  # a network's output saturates away from membrane
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


@pytest.fixture(scope="module")
def sections(isbi) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Section number -> (stand-in probability, true cell ids, true membrane mask)."""
    out = {}
    for number in EVALUATION:
        membrane = read_image(isbi / "train" / "label" / f"{number:02d}.png") < 128
        out[number] = (standin_probability(membrane, number), label(~membrane, connectivity=1), membrane)
    return out


@pytest.fixture(scope="module")
def segmented(sections) -> dict[int, np.ndarray]:
    return {number: segment_section(p) for number, (p, _, _) in sections.items()}


# --- real data ---------------------------------------------------------------------


def test_isbi_segmentation_far_better_than_trivial_baselines(sections, segmented):
    for number, (_, truth, membrane) in sections.items():
        labels = segmented[number]
        assert labels.dtype == np.uint32 and labels.shape == truth.shape
        scores = score_segmentation(labels, truth, membrane)
        one = score_segmentation(np.ones_like(labels), truth)
        each = score_segmentation(np.arange(1, labels.size + 1).reshape(labels.shape), truth)
        print(f"section {number}: {scores}; one segment {one}; each pixel {each}")
        assert scores.vi_split < 0.4 and scores.vi_merge < 0.4, scores
        assert scores.adapted_rand < 0.15, scores
        assert one.vi_merge > 5 and one.adapted_rand > 0.9
        assert each.vi_split > 8 and each.adapted_rand > 0.99
        assert scores.vi < one.vi / 10 and scores.vi < each.vi / 10
        assert scores.membrane_f1 is not None and scores.membrane_f1 > 0.5
        assert 0.8 < labels.max() / truth.max() < 1.4  # about as many cells as the truth


def test_ids_are_consecutive_and_small_segments_gone(segmented):
    settings = Segment2DSettings()
    for labels in segmented.values():
        sizes = np.bincount(labels.ravel())
        assert np.all(sizes[1:] >= settings.min_size)  # also: every id 1..N is used


def test_segmentation_is_deterministic(sections, segmented):
    probability = sections[25][0]
    assert np.array_equal(segment_section(probability), segmented[25])


def test_uint8_probability_reads_as_value_over_255(sections):
    probability = np.round(sections[26][0] * 255).astype(np.uint8)
    assert np.array_equal(segment_section(probability), segment_section(probability.astype(np.float32) / 255))


# --- windows -------------------------------------------------------------------------


def test_windowed_section_matches_whole_section(sections, segmented):
    probability = sections[25][0]
    windowed = segment_section(probability, Segment2DSettings(window=256, overlap=64))
    split, merge = variation_of_information(windowed, segmented[25])
    assert split + merge < 0.02 and adapted_rand_error(windowed, segmented[25]) < 0.005
    assert np.array_equal(windowed == 0, segmented[25] == 0)


def test_windowed_upsampled_section_close_to_whole(sections):
    # Twice the size: 25 windows, cells larger relative to them than at the default window.
    probability = np.clip(ndimage.zoom(sections[27][0], 2, order=1), 0, 1)
    settings = Segment2DSettings(min_size=120)
    whole = segment_section(probability, settings)
    windowed = segment_section(probability, settings.model_copy(update={"window": 256, "overlap": 64}))
    split, merge = variation_of_information(windowed, whole)
    assert split + merge < 0.05 and adapted_rand_error(windowed, whole) < 0.01


def test_ids_consistent_across_window_borders(sections):
    # Small windows: 5 x 5 windows on a 512 section, so many cells cross a border.
    settings = Segment2DSettings(window=128, overlap=32)
    cuts = _cuts(_windows(512, settings.window, settings.overlap))[1:-1]
    same = total = 0
    for probability, truth, _ in sections.values():
        labels = segment_section(probability, settings).astype(np.int64)
        for c in cuts:
            for a, b, t in (
                (labels[:, c - 1], labels[:, c], truth[:, c - 1] == truth[:, c]),
                (labels[c - 1], labels[c], truth[c - 1] == truth[c]),
            ):
                scored = t & (a > 0) & (b > 0)  # both sides inside the same true cell
                same += np.count_nonzero(a[scored] == b[scored])
                total += np.count_nonzero(scored)
    assert total > 5000
    assert same / total > 0.97, f"{same}/{total} pixel pairs across window borders share an id"


# --- pieces --------------------------------------------------------------------------


def test_small_segment_joins_neighbour_it_touches_most_or_vanishes():
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[:, :8] = 1
    labels[:, 10:] = 2
    labels[5:8, 8:10] = 3  # touches 1 on 3 pixels and 2 on 3 pixels ...
    labels[5:9, 8] = 3  # ... now 1 on 4 pixels: joins 1
    labels[15:17, 15:17] = 4  # inside 2: joins 2
    labels[0:2, 8:10] = 5  # touches 1 and 2 equally, 5 < min_size either way: joins one
    labels[12:15, 2:5] = 0
    labels[13, 3] = 6  # walled in by boundary 0
    out = remove_small_segments(labels, min_size=10)
    assert np.all(out[labels == 3] == 1)
    assert np.all(out[labels == 4] == 2)
    assert set(np.unique(out[labels == 5])) <= {1, 2} and len(np.unique(out[labels == 5])) == 1
    assert out[13, 3] == 0
    assert np.array_equal(out[labels == 1], labels[labels == 1])


def test_chain_of_small_segments_still_small_becomes_boundary():
    labels = np.zeros((10, 10), dtype=np.int64)
    labels[2, 2:4], labels[2, 4:6] = 1, 2  # two small ids touching only each other
    out = remove_small_segments(labels, min_size=5)
    assert not out.any()
    joined = remove_small_segments(labels, min_size=4)[2, 2:6]
    assert joined[0] in (1, 2) and np.all(joined == joined[0])


def test_bad_probability_raises_input_error():
    for bad in (np.full((8, 8), 1.5, np.float32), np.full((8, 8), np.nan, np.float32), np.zeros((2, 8, 8), np.float32)):
        with pytest.raises(InputError):
            segment_section(bad)
    with pytest.raises(InputError, match="float"):
        segment_section(np.zeros((8, 8), np.int32))


def test_constant_probability_gives_one_segment_or_none():
    assert np.array_equal(np.unique(segment_section(np.zeros((64, 64), np.float32))), [1])
    assert not segment_section(np.ones((64, 64), np.float32)).any()


def test_settings_are_validated():
    with pytest.raises(ValidationError):
        Segment2DSettings(window=256, overlap=200)
    with pytest.raises(ValidationError):
        Segment2DSettings(hmin=0.1)


def test_window_ranges_cover_with_overlap():
    ranges = _windows(1000, 256, 64)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(b - a == 256 for a, b in ranges)
    assert all(prev[1] - nxt[0] >= 63 for prev, nxt in zip(ranges, ranges[1:]))
    assert _windows(100, 256, 64) == [(0, 100)]


# --- metrics -------------------------------------------------------------------------


def _blocks() -> np.ndarray:
    truth = np.zeros((40, 40), dtype=np.int64)
    truth[:, :20], truth[:, 20:] = 1, 2
    truth[:, 19:21] = 0  # boundary: ignored
    return truth


def test_identical_segmentation_scores_zero():
    truth = _blocks()
    scores = score_segmentation(truth * 7 + 3 * (truth > 0), truth)  # other ids, same partition
    assert scores.vi_split == pytest.approx(0, abs=1e-12) and scores.vi_merge == pytest.approx(0, abs=1e-12)
    assert scores.adapted_rand == pytest.approx(0, abs=1e-12)


def test_split_raises_split_and_merge_raises_merge():
    truth = _blocks()
    split = truth.copy()
    split[:20][truth[:20] == 1] = 5
    s_split, s_merge = variation_of_information(split, truth)
    assert s_split > 0.1 and s_merge == pytest.approx(0, abs=1e-12)
    merged = np.where(truth > 0, 1, 0)
    m_split, m_merge = variation_of_information(merged, truth)
    assert m_merge > 0.5 and m_split == pytest.approx(0, abs=1e-12)
    assert adapted_rand_error(split, truth) > 0 and adapted_rand_error(merged, truth) > 0


def test_truth_boundary_ignored_and_segmentation_boundary_filled_from_nearest_segment():
    truth = _blocks()
    anything = truth.copy()
    anything[truth == 0] = 99  # what the segmentation says on true boundary does not matter
    assert variation_of_information(anything, truth) == pytest.approx((0, 0), abs=1e-12)
    thick = truth.copy()
    thick[:, 14:26] = 0  # membrane drawn thicker than the truth's: same partition
    thick[5:10, 5:10] = 0
    assert variation_of_information(thick, truth) == pytest.approx((0, 0), abs=1e-12)
    assert fill_boundary(thick)[7, 16] == 1 and fill_boundary(thick)[7, 24] == 2
    nothing = np.zeros_like(truth)  # no segment at all: one segment, every cell merged
    split, merge = variation_of_information(nothing, truth)
    assert merge > 0.5 and split == pytest.approx(0, abs=1e-12)


def test_metrics_reject_mismatched_or_empty_truth():
    with pytest.raises(InputError, match="shape"):
        adapted_rand_error(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(InputError, match="labelled"):
        variation_of_information(np.ones((4, 4)), np.zeros((4, 4)))


# --- label TIFF ----------------------------------------------------------------------


def test_label_tiff_round_trip_is_exact_uint32(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2**32 - 1, size=(3, 64, 48), dtype=np.uint32)
    labels[:, :10] = 0
    path = write_label_tiff(tmp_path / "seg.tif", labels)
    back = read_label_tiff(path)
    assert back.dtype == np.uint32 and np.array_equal(back, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.tif"]  # no temporary left behind
    single = read_label_tiff(write_label_tiff(tmp_path / "one.tif", labels[0].astype(np.int64)))
    assert single.shape == (1, 64, 48) and np.array_equal(single[0], labels[0])


def test_label_tiff_rejects_what_is_not_ids(tmp_path):
    with pytest.raises(InputError):
        write_label_tiff(tmp_path / "neg.tif", np.full((4, 4), -1))
    with pytest.raises(InputError):
        write_label_tiff(tmp_path / "float.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError):
        read_label_tiff(tmp_path / "missing.tif")
