"""Augmentations: geometry identical on image and labels, photometry on the image only."""

from __future__ import annotations

import numpy as np

from membraind.groundtruth.augment import Augmenter, equalize_histogram, motion_kernel
from membraind.groundtruth.settings import (
    AugmentationSettings, BrightnessContrastSettings, FlipSettings, InvertSettings, ScaleSettings,
)  # fmt: skip


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((64, 64)).astype(np.float32)
    labels = np.where(image > 0.5, 2, 1).astype(np.uint8)
    return image, labels


def test_flips_move_image_and_labels_together():
    settings = AugmentationSettings.none().model_copy(update={"flip": FlipSettings(probability=1.0)})
    image, labels = _pair()
    out_image, out_labels = Augmenter(settings)(image, labels, np.random.default_rng(0))
    # Probability 1: mirrored both ways and transposed.
    assert np.array_equal(out_image, image[::-1, ::-1].T)
    assert np.array_equal(out_labels, labels[::-1, ::-1].T)


def test_photometric_augmentations_never_touch_labels():
    image, labels = _pair(1)
    geometric_off = {"flip": FlipSettings(probability=0.0), "scale": ScaleSettings(probability=0.0)}
    augment = Augmenter(AugmentationSettings.all_on().model_copy(update=geometric_off))
    out_image, out_labels = augment(image, labels, np.random.default_rng(4))
    assert np.array_equal(out_labels, labels)
    assert not np.allclose(out_image, image)
    assert out_image.dtype == np.float32 and 0 <= out_image.min() and out_image.max() <= 1


def test_nothing_happens_with_every_probability_zero():
    image, labels = _pair(2)
    out_image, out_labels = Augmenter(AugmentationSettings.none())(image, labels, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_labels, labels)


def test_probability_controls_how_often_an_augmentation_fires():
    settings = AugmentationSettings.none().model_copy(
        update={"brightness_contrast": BrightnessContrastSettings(probability=0.3)}
    )
    augment, rng = Augmenter(settings), np.random.default_rng(7)
    image, labels = _pair(3)
    fired = sum(not np.array_equal(augment(image, labels, rng)[0], image) for _ in range(400))
    assert 80 < fired < 160


def test_motion_kernel_is_a_normalised_line():
    kernel = motion_kernel(9, 0.0)
    assert abs(kernel.sum() - 1) < 1e-6
    assert np.count_nonzero(kernel[4]) == 9 and np.count_nonzero(kernel) == 9


def test_histogram_equalisation_flattens_the_histogram():
    rng = np.random.default_rng(0)
    image = (rng.random((128, 128)) ** 3).astype(np.float32)  # skewed towards dark
    flat = equalize_histogram(image)
    counts, _ = np.histogram(flat, bins=4, range=(0, 1))
    assert counts.min() > 0.2 * flat.size


def test_scale_zooms_image_and_labels_together():
    """A zoomed patch keeps its size; its labels are moved with the image, never interpolated."""
    image = np.zeros((64, 64), np.float32)
    image[:, 30:34] = 1.0  # a 4 px bright stripe
    labels = np.where(image > 0.5, 2, 1).astype(np.uint8)
    settings = AugmentationSettings.none().model_copy(
        update={"scale": ScaleSettings(probability=1.0, scale_min=2.0, scale_max=2.0)}
    )
    out_image, out_labels = Augmenter(settings)(image, labels, np.random.default_rng(0))
    assert out_image.shape == out_labels.shape == (64, 64)
    assert set(np.unique(out_labels)) <= {1, 2}
    assert 7 <= np.count_nonzero(out_labels[32] == 2) <= 9  # twice as wide
    assert np.array_equal(out_labels == 2, out_image > 0.5)


def test_invert_flips_polarity_only():
    image, labels = _pair(5)
    settings = AugmentationSettings.none().model_copy(update={"invert": InvertSettings(probability=1.0)})
    out_image, out_labels = Augmenter(settings)(image, labels, np.random.default_rng(0))
    assert np.allclose(out_image, 1 - image) and np.array_equal(out_labels, labels)


def test_gamma_keeps_the_order_of_intensities_and_noise_adds_spread():
    from membraind.groundtruth.settings import GammaSettings, NoiseSettings

    ramp = np.tile(np.linspace(0.05, 0.95, 64, dtype=np.float32), (64, 1))
    labels = np.ones((64, 64), np.uint8)
    gamma = Augmenter(AugmentationSettings.none().model_copy(update={"gamma": GammaSettings(probability=1.0, gamma=2.0)}))
    out, _ = gamma(ramp, labels, np.random.default_rng(1))
    assert not np.allclose(out, ramp) and np.all(np.diff(out[0]) > 0)  # another response curve, same order
    noise = Augmenter(AugmentationSettings.none().model_copy(update={"noise": NoiseSettings(probability=1.0, sigma_max=0.1)}))
    flat = np.full((64, 64), 0.5, np.float32)
    out, _ = noise(flat, labels, np.random.default_rng(2))
    assert 0.001 < out.std() < 0.1 and np.array_equal(flat, np.full((64, 64), 0.5, np.float32))  # the input is kept
