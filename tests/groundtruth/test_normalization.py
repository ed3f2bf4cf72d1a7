"""Intensity normalisation: tile-invariant, stored settings, CLAHE as an option."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from membraind.groundtruth.normalization import IntensityNormalization
from membraind.volumes.image_files import read_image


@pytest.fixture(scope="module")
def sections(isbi):
    return [read_image(isbi / "train" / "image" / f"{i:02d}.png") for i in range(3)]


def test_percentile_stretch_is_the_same_in_every_tile(sections):
    norm = IntensityNormalization()
    section = sections[0]
    whole = norm.normalize_section(section)
    value_range = norm.section_range(section)
    for y, x in [(0, 0), (100, 300), (256, 128)]:
        tile = section[y : y + 200, x : x + 200]
        assert np.array_equal(norm.apply(tile, value_range), whole[y : y + 200, x : x + 200])
    # A tile's own statistics would differ: that is the seam the design avoids.
    assert not np.array_equal(norm.normalize_section(section[:100, :100]), whole[:100, :100])


def test_stretch_maps_percentiles_to_0_and_1(sections):
    out = IntensityNormalization(low_percentile=1, high_percentile=99).normalize_section(sections[1])
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert 0.005 < (out == 0).mean() < 0.03 and 0.005 < (out == 1).mean() < 0.03


def test_dataset_scope_uses_one_range_for_all_sections(sections):
    norm = IntensityNormalization(scope="dataset").fit(sections)
    assert norm.dataset_range is not None
    assert norm.section_range(sections[0]) == norm.section_range(sections[2]) == norm.dataset_range
    # It round-trips through JSON, as it will inside a model bundle.
    again = IntensityNormalization.model_validate_json(norm.model_dump_json())
    assert again == norm
    assert np.array_equal(again.normalize_section(sections[1]), norm.normalize_section(sections[1]))


def test_unfitted_dataset_scope_is_refused(sections):
    with pytest.raises(ValueError, match="must be fitted"):
        IntensityNormalization(scope="dataset").normalize_section(sections[0])


def test_clahe_option_raises_local_contrast(sections):
    plain = IntensityNormalization().normalize_section(sections[0])
    clahe = IntensityNormalization(clahe=True).normalize_section(sections[0])
    assert clahe.shape == plain.shape and clahe.dtype == np.float32
    assert not np.allclose(clahe, plain)


def test_percentiles_must_be_ordered():
    with pytest.raises(ValidationError, match="must be below"):
        IntensityNormalization(low_percentile=60, high_percentile=40)
