"""The ground-truth settings: label import (``[groundtruth]``), the patch sampler
(``[sampler]``) and the augmentations (``[augmentation]``).

The ``[normalization]`` section is :class:`~membraind.groundtruth.normalization.IntensityNormalization`
itself: it is also the fitted transform a model bundle stores, so it stays beside its code.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from membraind.groundtruth.label_mapping import PRESETS, LabelMapping, parse_mapping
from membraind.strict import StrictModel

__all__ = [
    "GroundTruthSettings", "SamplerSettings", "AugmentationSettings", "FlipSettings", "GaussianBlurSettings",
    "MotionBlurSettings", "HistogramEqualizationSettings", "BrightnessContrastSettings", "GammaSettings",
    "NoiseSettings", "ScaleSettings", "InvertSettings",
]  # fmt: skip


class GroundTruthSettings(StrictModel):
    """Label import and ground-truth conversions."""

    label_mapping: str | dict[int, int] = Field(
        "classes",
        description=f"a preset ({', '.join(PRESETS)}), GRAY=CLASS pairs (0=2,255=1,128=0) or a table of gray value -> class",
    )
    membrane_thickness: int = Field(3, ge=1, description="instance -> membrane: membrane width in pixels")
    fill_ecs: bool = Field(False, description="instance -> membrane: id 0 becomes membrane (else unannotated)")
    skeleton_tube_radius: float = Field(4.0, gt=0, description="membrane -> skeleton: backbone tube radius (px)")

    @field_validator("label_mapping")
    @classmethod
    def _readable(cls, value: str | dict[int, int]) -> str | dict[int, int]:
        parse_mapping(value)  # a bad mapping fails when the configuration is read, naming the bad part
        return value

    def mapping(self) -> LabelMapping:
        """The configured :class:`LabelMapping`."""
        return parse_mapping(self.label_mapping)


class SamplerSettings(StrictModel):
    """The partial-annotation patch sampler."""

    patch_size: int | None = Field(
        None,
        ge=16,
        multiple_of=2,
        description="patch side in pixels (the network input); none: the largest up to 128 that the painted regions hold",
    )
    angle_step: float = Field(5.0, gt=0, le=90, description="width of the angle bins whose valid centres are cached")
    min_painted: float | None = Field(
        None,
        gt=0,
        le=1,
        description="share of a patch that must be painted: 1 = wholly inside the painting; less lets patches reach "
        "into unpainted EM (cut axis-aligned), which the loss ignores and unpainted-pixel learning uses; "
        "none: 1, or 0.05 while unpainted-pixel learning is on",
    )
    seed: int = Field(0, description="random seed: the same seed draws the same patches")


class _Step(StrictModel):
    probability: float = Field(0.0, ge=0.0, le=1.0, description="chance that a patch gets this augmentation")


class FlipSettings(_Step):
    """Mirror left-right, top-bottom, and transpose (square patches), each independently."""

    probability: float = Field(0.5, ge=0.0, le=1.0)


class GaussianBlurSettings(_Step):
    """Blur with a Gaussian of random sigma in [sigma_min, sigma_max] pixels."""

    probability: float = Field(0.2, ge=0.0, le=1.0)
    sigma_min: float = Field(0.5, gt=0.0)
    sigma_max: float = Field(1.5, gt=0.0)


class MotionBlurSettings(_Step):
    """Average along a line of random direction and length in [3, max_length] pixels."""

    probability: float = Field(0.1, ge=0.0, le=1.0)
    max_length: int = Field(9, ge=3, le=63)


class HistogramEqualizationSettings(_Step):
    """Global histogram equalisation of the patch."""

    probability: float = Field(0.1, ge=0.0, le=1.0)


class BrightnessContrastSettings(_Step):
    """Shift brightness by up to +-brightness and scale contrast by 1 +- contrast."""

    probability: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.1, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)


class GammaSettings(_Step):
    """Raise intensities to a random power in [1 / gamma, gamma]: another lab's detector or stain response."""

    gamma: float = Field(1.5, ge=1.0, le=4.0)


class NoiseSettings(_Step):
    """Add Gaussian noise of random sigma in [0, sigma_max] (intensities in [0, 1])."""

    sigma_max: float = Field(0.08, gt=0.0, le=0.5)


class ScaleSettings(_Step):
    """Zoom by a random factor in [scale_min, scale_max]: another pixel size (labels follow, nearest pixel)."""

    scale_min: float = Field(0.7, gt=0.1, le=4.0)
    scale_max: float = Field(1.4, gt=0.1, le=4.0)


class InvertSettings(_Step):
    """Invert intensities (membranes bright): staining or detector polarity of another lab."""


class AugmentationSettings(StrictModel):
    """Every augmentation with its own probability and strength (applied by :class:`~membraind.groundtruth.augment.Augmenter`)."""

    rotate: bool = Field(True, description="cut patches at any angle (done by the sampler)")
    flip: FlipSettings = FlipSettings()
    gaussian_blur: GaussianBlurSettings = GaussianBlurSettings()
    motion_blur: MotionBlurSettings = MotionBlurSettings()
    histogram_equalization: HistogramEqualizationSettings = HistogramEqualizationSettings()
    brightness_contrast: BrightnessContrastSettings = BrightnessContrastSettings()
    # What differs between labs (off by default; the starter model trains with them on):
    gamma: GammaSettings = GammaSettings()
    noise: NoiseSettings = NoiseSettings()
    scale: ScaleSettings = ScaleSettings()
    invert: InvertSettings = InvertSettings()

    @classmethod
    def uniform(cls, probability: float, rotate: bool) -> "AugmentationSettings":
        """Every augmentation at the same probability, default strengths."""
        fields = (
            "flip", "gaussian_blur", "motion_blur", "histogram_equalization", "brightness_contrast", "gamma", "noise",
            "scale", "invert",
        )  # fmt: skip
        return cls(rotate=rotate, **{name: {"probability": probability} for name in fields})

    @classmethod
    def none(cls) -> "AugmentationSettings":
        """No augmentation at all: patches exactly as they lie in the image."""
        return cls.uniform(0.0, rotate=False)

    @classmethod
    def all_on(cls) -> "AugmentationSettings":
        """Every augmentation on every patch (for benchmarks and worst-case timing)."""
        return cls.uniform(1.0, rotate=True)
