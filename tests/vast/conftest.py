"""Fixtures of the VAST tests."""

from __future__ import annotations

import pytest

from membraind.volumes.image_files import read_image, write_image


@pytest.fixture(scope="session")
def painting_em(isbi, tmp_path_factory):
    """ISBI sections 0-3 cropped to 320 x 256: the EM layer of an emulated VAST to paint ground truth in."""
    folder = tmp_path_factory.mktemp("painting-em")
    for z in range(4):
        write_image(folder / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{z:02d}.png")[:256, :320])
    return folder
