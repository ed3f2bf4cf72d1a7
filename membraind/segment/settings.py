"""Settings of the 2D instance segmentation (watershed on membrane probability)."""

from __future__ import annotations

from pydantic import Field, model_validator

from membraind.strict import StrictModel

__all__ = ["Segment2DSettings"]


class Segment2DSettings(StrictModel):
    """How one section's membrane probability becomes cell ids (see :func:`segment_section`).

    The defaults were chosen on the membrane probability of a network trained on ISBI
    2012 sections 0-24, scored on held-out sections 25-29 (``docs/benchmarks.md``);
    tune ``h`` first on other data.
    """

    h: float = Field(
        0.03,
        gt=0,
        le=1,
        description="h-minima depth: basins shallower than this (in probability units) get no seed of their own; "
        "larger merges more, smaller splits more",
    )
    sigma: float = Field(1.0, ge=0, description="Gaussian smoothing of the probability before seeding, in pixels; 0 = off")
    min_size: int = Field(
        30,
        ge=0,
        description="segments with fewer pixels join the neighbour they touch most; "
        "ones touching no segment (walled in by membrane) become boundary 0",
    )
    membrane_threshold: float = Field(
        0.5, gt=0, le=1, description="pixels whose smoothed membrane probability exceeds this become boundary 0"
    )
    window: int = Field(2048, ge=64, description="sections larger than this are segmented in overlapping windows")
    overlap: int = Field(256, ge=16, description="pixels shared by neighbouring windows, used to match their ids")

    @model_validator(mode="after")
    def _overlap_fits(self) -> "Segment2DSettings":
        if 2 * self.overlap > self.window:
            raise ValueError(f"overlap ({self.overlap}) must be at most half the window ({self.window})")
        return self
