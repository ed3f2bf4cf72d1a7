"""Augmentations of training patches.

Geometric changes apply identically to the image and its labels (labels are only ever
moved, never interpolated); photometric changes touch the image only. Rotation by any
angle is not here: it happens when the patch is cut out (see
:mod:`membraind.groundtruth.sampler`), because whether a rotated patch is fully
annotated depends on the angle, and rotating an already cut patch would bring
unannotated corners into it.

Images are float32 in [0, 1] (after intensity normalisation).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from membraind.groundtruth.settings import AugmentationSettings


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised line kernel of ``length`` pixels at ``angle`` radians."""
    radius = length // 2
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
    steps = np.linspace(-radius, radius, 4 * length)
    rows = np.rint(radius + steps * np.sin(angle)).astype(int)
    cols = np.rint(radius + steps * np.cos(angle)).astype(int)
    kernel[rows, cols] = 1.0
    return kernel / kernel.sum()


def equalize_histogram(image: np.ndarray, bins: int = 256) -> np.ndarray:
    """Global histogram equalisation of a [0, 1] image (a 256-bin lookup: fast on patches)."""
    levels = np.minimum((image * bins).astype(np.intp), bins - 1)
    cdf = np.cumsum(np.bincount(levels.ravel(), minlength=bins)).astype(np.float32)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    return cdf[levels]


def zoom(array: np.ndarray, factor: float, order: int) -> np.ndarray:
    """``array`` zoomed by ``factor`` about its centre, same shape (mirrored beyond its border when
    zooming out); ``order`` 0 (nearest pixel) for labels, 1 for images."""
    centre = (np.array(array.shape, float) - 1) / 2
    # Output pixel q shows input pixel centre + (q - centre) / factor.
    return ndimage.affine_transform(
        array, np.full(2, 1 / factor), offset=centre - centre / factor, order=order, mode="mirror"
    )


class Augmenter:
    """Applies :class:`AugmentationSettings` to (image, labels) patch pairs."""

    def __init__(self, settings: AugmentationSettings) -> None:
        self.settings = settings

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return augmented copies (or the inputs, when nothing fired)."""
        s = self.settings
        if rng.random() < s.flip.probability:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if rng.random() < s.flip.probability:
            image, labels = image[::-1], labels[::-1]
        if rng.random() < s.flip.probability and image.shape[0] == image.shape[1]:
            image, labels = image.T, labels.T  # with the flips: all 8 right-angle orientations
        image = np.ascontiguousarray(image, dtype=np.float32)
        labels = np.ascontiguousarray(labels)
        if rng.random() < s.scale.probability:
            # log-uniform, so that zooming in and out by the same factor are equally likely
            low, high = sorted((s.scale.scale_min, s.scale.scale_max))
            factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            image, labels = zoom(image, factor, order=1), zoom(labels, factor, order=0)
        return self.photometric(image, rng), labels

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The intensity changes alone (a float32 [0, 1] copy, or ``image`` when nothing fired):
        what :meth:`__call__` does to the image after moving it, and the strong view of
        unpainted-pixel learning (:mod:`membraind.nn.unpainted`)."""
        s = self.settings
        image = np.ascontiguousarray(image, dtype=np.float32)
        if rng.random() < s.gaussian_blur.probability:
            sigma = rng.uniform(s.gaussian_blur.sigma_min, max(s.gaussian_blur.sigma_min, s.gaussian_blur.sigma_max))
            image = ndimage.gaussian_filter(image, sigma, mode="reflect")
        if rng.random() < s.motion_blur.probability:
            kernel = motion_kernel(int(rng.integers(3, s.motion_blur.max_length + 1)), rng.uniform(0, np.pi))
            pad = kernel.shape[0] // 2
            image = signal.oaconvolve(np.pad(image, pad, mode="reflect"), kernel, mode="valid").astype(np.float32)
        if rng.random() < s.histogram_equalization.probability:
            image = equalize_histogram(image)
        if rng.random() < s.brightness_contrast.probability:
            bc = s.brightness_contrast
            contrast = 1.0 + rng.uniform(-bc.contrast, bc.contrast)
            brightness = rng.uniform(-bc.brightness, bc.brightness)
            image = (image - 0.5) * contrast + 0.5 + brightness
        if rng.random() < s.gamma.probability:
            image = np.clip(image, 0.0, 1.0) ** np.float32(np.exp(rng.uniform(-1, 1) * np.log(s.gamma.gamma)))
        if rng.random() < s.noise.probability:
            sigma = rng.uniform(0.0, s.noise.sigma_max)
            image = image + (sigma * rng.standard_normal(image.shape)).astype(np.float32)
        if rng.random() < s.invert.probability:
            image = 1.0 - image
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)  # a copy: the caller's image stays as it was
