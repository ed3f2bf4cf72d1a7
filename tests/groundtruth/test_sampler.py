"""The partial-annotation patch sampler on real ISBI labels with irregular holes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from membraind.demo.brush import erase_irregular, keep_strokes
from membraind.errors import InputError
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth
from membraind.groundtruth.sampler import PatchSampler
from membraind.groundtruth.settings import AugmentationSettings, FlipSettings

PATCH = 128
BLOCK = 32
ROTATE_ONLY = AugmentationSettings.none().model_copy(update={"rotate": True})


@pytest.fixture(scope="module")
def partial_isbi(isbi):
    """Eight ISBI sections with an irregular 70% of each label erased."""
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    return [
        GroundTruthImage(gt.name, gt.em, erase_irregular(gt.labels, 0.7, seed=k, smoothness=90))
        for k, gt in enumerate(images[:8])
    ]


@pytest.fixture(scope="module")
def isbi_sections(isbi):
    """Three fully labelled ISBI sections, to paint brush strokes on."""
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    return images[:3]


def painted(sections, width: float, strokes) -> list[GroundTruthImage]:
    """The sections with labels kept only under the brush ``strokes``, ``width`` px wide."""
    return [GroundTruthImage(gt.name, gt.em, keep_strokes(gt.labels, width, strokes)) for gt in sections]


def stroke_at(angle: float, length: float = 440.0, centre: float = 255.5) -> tuple[float, float, float, float]:
    """A straight stroke through the middle of a 512 px section, ``angle`` degrees from horizontal."""
    dy, dx = np.sin(np.radians(angle)) * length / 2, np.cos(np.radians(angle)) * length / 2
    return (centre - dy, centre - dx, centre + dy, centre + dx)


HORIZONTAL = [(90, 20, 90, 490), (300, 20, 300, 490)]
# Directions half-way between the sampler's 5-degree angle bins: the hardest for it.
BETWEEN_BINS = (2.5, 47.5, 132.5)


@pytest.fixture(scope="module")
def thousand_patches(partial_isbi):
    sampler = PatchSampler(partial_isbi, PATCH, augmentation=ROTATE_ONLY, seed=1)
    return sampler, [sampler.sample() for _ in range(1000)]


def test_erased_labels_keep_30_percent(partial_isbi):
    for gt in partial_isbi:
        assert gt.annotated_fraction == pytest.approx(0.3, abs=0.01)


def test_no_patch_contains_an_unannotated_pixel(partial_isbi, thousand_patches):
    sampler, patches = thousand_patches
    assert len(patches) == 1000
    for patch in patches:
        assert patch.labels.shape == patch.image.shape == (PATCH, PATCH)
        assert patch.labels.min() >= 1
    # Independently of the sampler's own check: the patch footprint in the source image
    # (every pixel the nearest-neighbour cut reads) is annotated.
    half = PATCH // 2
    offsets = np.stack(np.meshgrid(np.arange(-half, half), np.arange(-half, half), indexing="ij")).reshape(2, -1)
    for patch in patches[::10]:
        t = np.radians(patch.angle)
        rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        rows, cols = np.rint(rot @ offsets + np.array(patch.centre)[:, None]).astype(int)
        assert (partial_isbi[patch.source].labels[rows, cols] > 0).all()
    # The valid-centre masks are right nearly always; the final check is a safety net.
    assert sampler.rejected <= 10


def test_angles_cover_the_full_circle(thousand_patches):
    _, patches = thousand_patches
    counts, _ = np.histogram([p.angle for p in patches], bins=12, range=(0, 360))
    assert counts.min() >= 40, counts


def _expected_share(sampler: PatchSampler, source: int) -> np.ndarray:
    """Probability of each pixel of ``source`` being drawn as a centre."""
    bins = [b for b in range(sampler.bin_count) if sampler.bin_total(b)]
    share = np.zeros(sampler.sources[source].annotated.shape)
    for b in bins:
        share += sampler.centres(source, b).mask() / sampler.bin_total(b)
    return share / len(bins)


def test_centres_reach_every_part_of_the_annotation_without_clustering(partial_isbi, thousand_patches):
    sampler, patches = thousand_patches
    checked_blocks = 0
    for source in range(len(partial_isbi)):
        share = _expected_share(sampler, source)
        centres = np.array([p.centre for p in patches if p.source == source], dtype=int).reshape(-1, 2)
        drawn = np.zeros((512 // BLOCK, 512 // BLOCK))
        np.add.at(drawn, (centres[:, 0] // BLOCK, centres[:, 1] // BLOCK), 1)
        expected = share.reshape(512 // BLOCK, BLOCK, 512 // BLOCK, BLOCK).sum(axis=(1, 3)) * len(patches)
        # Every part of the region where patches fit gets centres ...
        regions, n = ndimage.label(share > 0)
        for region in range(1, n + 1):
            if share[regions == region].sum() * len(patches) >= 5:
                ys, xs = np.nonzero(regions == region)
                hit = ((regions[centres[:, 0], centres[:, 1]] == region).sum()) if len(centres) else 0
                assert hit > 0, f"no centre in a valid region of {partial_isbi[source].name} around ({ys[0]}, {xs[0]})"
        # ... and no part gets far more than its share (no clustering).
        big = expected >= 8
        checked_blocks += int(big.sum())
        if not big.any():
            continue
        ratio = drawn[big] / expected[big]
        assert ratio.min() > 0.3 and ratio.max() < 2.5, (partial_isbi[source].name, ratio.min(), ratio.max())
    assert checked_blocks >= 20


def test_rotated_patches_keep_image_and_label_aligned():
    # The label is a function of the image (membrane where the image is dark): any
    # misregistration between the cut image and the cut label breaks that relation.
    # It must hold at every pixel, edges included (a bilinear image beside
    # nearest-neighbour labels broke it along every edge).
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.standard_normal((400, 400)), 6)
    em = np.clip(128 + field / field.std() * 60, 0, 255).astype(np.uint8)
    labels = np.where(em < 128, 2, 1).astype(np.uint8)
    augmentation = ROTATE_ONLY.model_copy(update={"flip": FlipSettings(probability=0.5)})
    sampler = PatchSampler(
        [GroundTruthImage("f", em, labels)], 64, IntensityNormalization(method="none"), augmentation, seed=5
    )
    angles = []
    for _ in range(200):
        patch = sampler.sample()
        angles.append(patch.angle)
        disagree = np.count_nonzero((patch.image < 128 / 255) != (patch.labels == 2))
        assert disagree == 0, (patch.angle, disagree)
    assert np.ptp(angles) > 300


def test_same_seed_same_patches(partial_isbi):
    first = PatchSampler(partial_isbi[:2], PATCH, seed=9)
    second = PatchSampler(partial_isbi[:2], PATCH, seed=9)
    for _ in range(20):
        a, b = first.sample(), second.sample()
        assert a.centre == b.centre and a.angle == b.angle
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


def test_all_augmentations_keep_the_guarantee(partial_isbi):
    sampler = PatchSampler(partial_isbi[:3], PATCH, augmentation=AugmentationSettings.all_on(), seed=2)
    images, labels = sampler.batch(50)
    assert images.shape == labels.shape == (50, PATCH, PATCH)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert labels.min() >= 1


def test_without_rotation_patches_are_plain_windows(partial_isbi):
    sampler = PatchSampler(partial_isbi[:2], PATCH, IntensityNormalization(method="none"), AugmentationSettings.none())
    for _ in range(20):
        patch = sampler.sample()
        y, x = patch.centre
        window = np.s_[y - PATCH // 2 : y + PATCH // 2, x - PATCH // 2 : x + PATCH // 2]
        src = partial_isbi[patch.source]
        assert patch.angle == 0.0
        assert np.array_equal(patch.labels, src.labels[window])
        assert np.allclose(patch.image, src.em[window] / 255.0)


def test_patch_too_large_for_the_annotation_says_what_fits(partial_isbi):
    with pytest.raises(InputError, match=r"no 512x512 patch fits .*the largest that fits is \d+ px"):
        PatchSampler(partial_isbi[:1], 512)


def test_the_largest_size_named_really_fits(isbi_sections):
    # Horizontal strokes 133 px wide hold an upright 128 px patch but no patch turned a
    # few degrees; the sampler turns every patch, so 128 px does not fit (the message
    # used to say so and then name 128 or more as the largest that fits).
    strokes = painted(isbi_sections[:2], 133, HORIZONTAL)
    with pytest.raises(InputError, match=r"no 128x128 patch fits") as caught:
        PatchSampler(strokes, 128)
    message = str(caught.value)
    largest = int(re.search(r"the largest that fits is (\d+) px", message).group(1))
    assert 0 < largest < 128
    sampler = PatchSampler(strokes, largest, seed=4)
    assert all(sampler.sample().labels.min() >= 1 for _ in range(50))
    with pytest.raises(InputError, match=f"the largest that fits is {largest} px"):
        PatchSampler(strokes, largest + 2)
    # Strokes as wide as the message asks for hold 128 px patches, whatever their direction.
    width = int(re.search(r"paint regions at least (\d+) px wide in any direction for 128 px patches", message).group(1))
    for angle in BETWEEN_BINS:
        sampler = PatchSampler(painted(isbi_sections[:1], width, [stroke_at(angle)]), 128, seed=4)
        assert all(sampler.sample().labels.min() >= 1 for _ in range(20))


def test_no_patch_size_given_takes_the_largest_that_fits(isbi_sections):
    strokes = painted(isbi_sections[:2], 60, [stroke_at(20), stroke_at(-35, centre=380)])
    sampler = PatchSampler(strokes, None, multiple=16)
    assert sampler.automatic and sampler.patch_size % 16 == 0 and 32 <= sampler.patch_size < 128
    assert all(sampler.sample().labels.min() >= 1 for _ in range(50))
    with pytest.raises(InputError, match=f"the largest that fits is {sampler.patch_size} px"):
        PatchSampler(strokes, sampler.patch_size + 16, multiple=16)
    # Fully labelled sections hold far more: the choice stops at 128 px.
    assert PatchSampler(isbi_sections[:1], None, multiple=16).patch_size == 128


def test_too_narrow_painting_says_how_wide_to_paint(isbi_sections):
    with pytest.raises(InputError, match="too narrow for training") as caught:
        PatchSampler(painted(isbi_sections[:2], 30, HORIZONTAL), None, multiple=16)
    found = re.search(r"paint regions at least (\d+) px wide in any direction for (\d+) px patches", str(caught.value))
    width, smallest = int(found.group(1)), int(found.group(2))
    assert width > 30
    for angle in BETWEEN_BINS:  # strokes that wide suffice, in any direction
        sampler = PatchSampler(painted(isbi_sections[:1], width, [stroke_at(angle)]), None, multiple=16)
        assert sampler.patch_size >= smallest
        assert all(sampler.sample().labels.min() >= 1 for _ in range(20))
