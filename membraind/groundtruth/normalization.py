"""Tile-invariant intensity normalisation (docs/design-notes.md, "Tile-invariant preprocessing").

A percentile stretch maps the ``low_percentile`` gray value of a section to 0 and the
``high_percentile`` value to 1. Its statistics come from a whole section (``scope =
"section"``) or from the whole training set (``scope = "dataset"``), never from the tile
being predicted, so a pixel gets the same value whichever tile it falls in and tile
borders leave no seams. The settings and the fitted dataset range are stored in the
model bundle, so prediction applies exactly what training applied.

CLAHE (mEMbrain's only intensity correction) is available as an option on top of the
stretch. It is computed per whole section: it adapts to local contrast, so it is
tile-invariant only when a whole section, not a tile, is equalised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator
from skimage import exposure

from membraind.strict import StrictModel

# Statistics read every 4th pixel in each axis: exact enough for percentiles and 16x
# cheaper on large sections.
_STATS_STRIDE = 4


class IntensityNormalization(StrictModel):
    """How raw EM gray values become the network's float input in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    method: Literal["percentile", "none"] = Field(
        "percentile", description="'percentile': stretch between two percentiles; 'none': divide by the dtype maximum"
    )
    low_percentile: float = Field(0.5, ge=0.0, lt=100.0)
    high_percentile: float = Field(99.5, gt=0.0, le=100.0)
    scope: Literal["section", "dataset"] = Field(
        "section", description="where the percentiles come from: each whole section, or the whole training set"
    )
    clahe: bool = Field(False, description="apply CLAHE (per whole section) after the stretch")
    clahe_kernel: int = Field(128, ge=8, description="CLAHE context region size in pixels")
    clahe_clip: float = Field(0.01, gt=0.0, le=1.0, description="CLAHE clip limit")
    dataset_range: tuple[float, float] | None = Field(
        None, description="gray values of the two percentiles over the training set (set by fit)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "IntensityNormalization":
        if self.low_percentile >= self.high_percentile:
            raise ValueError(
                f"low_percentile ({self.low_percentile}) must be below high_percentile ({self.high_percentile})"
            )
        return self

    def _percentiles(self, pixels: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(pixels, [self.low_percentile, self.high_percentile])
        return float(lo), float(hi)

    def fit(self, sections: list[np.ndarray]) -> "IntensityNormalization":
        """Return a copy holding the statistics of ``sections`` (needed for dataset scope)."""
        if self.method != "percentile" or self.scope != "dataset":
            return self
        sample = np.concatenate([s[::_STATS_STRIDE, ::_STATS_STRIDE].ravel() for s in sections])
        return self.model_copy(update={"dataset_range": self._percentiles(sample)})

    def section_range(self, section: np.ndarray) -> tuple[float, float]:
        """The (low, high) gray values used to stretch pixels of ``section``.

        ``section`` must be the whole section (or, at prediction time, a fixed
        subsample of it), never a tile: that is what makes the result tile-invariant.
        """
        if self.method == "none":
            top = float(np.iinfo(section.dtype).max) if np.issubdtype(section.dtype, np.integer) else 1.0
            return 0.0, top
        if self.scope == "dataset":
            if self.dataset_range is None:
                raise ValueError("dataset-scope normalisation must be fitted (fit()) before use")
            return self.dataset_range
        return self._percentiles(section[::_STATS_STRIDE, ::_STATS_STRIDE])

    def apply(self, pixels: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
        """Stretch ``pixels`` (a section or a tile of it) with a range from :meth:`section_range`."""
        lo, hi = value_range
        out = (pixels.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
        np.clip(out, 0.0, 1.0, out=out)
        if self.clahe:
            out = exposure.equalize_adapthist(out, kernel_size=self.clahe_kernel, clip_limit=self.clahe_clip)
            out = out.astype(np.float32)
        return out

    def normalize_section(self, section: np.ndarray) -> np.ndarray:
        """Normalise a whole section with its own statistics."""
        return self.apply(section, self.section_range(section))
