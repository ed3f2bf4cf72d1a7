"""Numbers the user guide states that the code computes: how wide to paint for each patch size."""

from __future__ import annotations

import re
from pathlib import Path

from membraind.groundtruth.sampler import angle_bins, width_needed
from membraind.groundtruth.settings import AugmentationSettings, SamplerSettings

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"


def test_stroke_width_table_matches_the_sampler():
    rows = re.findall(r"^\| (\d+)(?: or wider)? \| (\d+) \|$", GUIDE.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(rows) >= 3, "the user guide's table of stroke widths is gone"
    rotate = AugmentationSettings().rotate
    bin_width = 90 / angle_bins(SamplerSettings().angle_step, rotate)
    for width, patch in rows:
        assert int(width) == width_needed(int(patch), rotate, bin_width), (width, patch)
