"""The partial-annotation patch sampler.

Users paint ground truth as brush strokes of any shape; a training patch must lie
wholly inside the painting, at whatever angle it is cut. For a patch of side P cut at
angle theta around centre c, every pixel ``c + R(theta) (u, v)`` with integer offsets
``u, v`` in ``[-P/2, P/2)`` must be annotated.

Valid centres for an angle come from the chessboard distance transform of the
annotation mask seen in the patch's own frame: there, the patch is an axis-aligned
square, and a centre is valid when the nearest unannotated pixel is more than P/2 away
(chessboard metric). Angles are grouped in bins (``angle_step`` degrees, over 90
degrees only, since a square turned by 90 degrees covers the same pixels); a bin's mask
uses a radius grown so that every angle in the bin fits, and is computed lazily once
per (image, bin). Each cut patch is still checked, so a patch with an unannotated
pixel can never come out (rare rounding misses are re-drawn and counted in
``rejected``).

Centres are drawn in stratified rounds over the valid set of each (image, bin): the
valid centres, in row order, are split into equal strata and every round takes one
uniformly random centre from each stratum in random order. Samples thus spread over
the whole valid region instead of clustering, and every valid centre stays possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from membraind.errors import InputError
from membraind.groundtruth.augment import Augmenter
from membraind.groundtruth.settings import AugmentationSettings
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.pairs import GroundTruthImage

STRATA_PER_ROUND = 64
MAX_REDRAWS = 100
# Nearest-neighbour resampling of the mask into and out of the rotated frame can move
# its border by about one pixel each way.
ROUNDING_MARGIN = 2.0


@dataclass
class Patch:
    """One training patch: normalised image, class labels, and where it came from."""

    image: np.ndarray  # float32 (P, P) in [0, 1]
    labels: np.ndarray  # uint8 (P, P), no UNANNOTATED pixel
    source: int  # index of the ground-truth image
    centre: tuple[int, int]  # (y, x) in the source image
    angle: float  # degrees, counter-clockwise as seen on screen


class CentreSet:
    """The valid centres of one (image, angle bin), stored as one bit per pixel."""

    def __init__(self, mask: np.ndarray) -> None:
        self.width = mask.shape[1]
        self.bits = np.packbits(mask, axis=1)
        self.row_ends = np.cumsum(np.count_nonzero(mask, axis=1))
        self.count = int(self.row_ends[-1]) if self.row_ends.size else 0
        self._order = np.empty(0, np.int64)

    def centre(self, index: int) -> tuple[int, int]:
        """The (y, x) of the ``index``-th valid centre in row order."""
        row = int(np.searchsorted(self.row_ends, index, side="right"))
        before = int(self.row_ends[row - 1]) if row else 0
        cols = np.flatnonzero(np.unpackbits(self.bits[row], count=self.width))
        return row, int(cols[index - before])

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """Next centre of the current stratified round (a new round starts when one ends)."""
        if self._order.size == 0:
            strata = min(STRATA_PER_ROUND, self.count)
            edges = np.linspace(0, self.count, strata + 1)
            picks = np.floor(edges[:-1] + rng.random(strata) * np.diff(edges)).astype(np.int64)
            self._order = rng.permutation(np.minimum(picks, self.count - 1))
        index, self._order = int(self._order[0]), self._order[1:]
        return self.centre(index)

    def restart(self) -> None:
        """Forget the current round."""
        self._order = np.empty(0, np.int64)

    def mask(self) -> np.ndarray:
        """The valid-centre mask as a boolean image."""
        return np.unpackbits(self.bits, axis=1, count=self.width).astype(bool)


def _rotation(angle_deg: float) -> np.ndarray:
    """Matrix taking patch-frame offsets (row, col) to image offsets (row, col)."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # Counter-clockwise on screen, where rows grow downwards.
    return np.array([[c, s], [-s, c]])


@dataclass
class _Source:
    image: np.ndarray  # normalised float32
    annotated: np.ndarray  # bool
    labels: np.ndarray
    bins: dict[int, CentreSet] = field(default_factory=dict)


class PatchSampler:
    """Streams P x P patches that lie wholly inside the annotation, at any angle.

    ``images`` are ground-truth images with classes 0..3 (0 = not annotated);
    ``normalization`` is applied once per whole image (fit it first for dataset scope);
    ``augmentation`` settings decide rotation and the other augmentations.
    """

    def __init__(
        self,
        images: Sequence[GroundTruthImage],
        patch_size: int,
        normalization: IntensityNormalization | None = None,
        augmentation: AugmentationSettings | None = None,
        angle_step: float = 5.0,
        seed: int | Sequence[int] = 0,
    ) -> None:
        if patch_size < 2 or patch_size % 2:
            raise InputError(f"patch size must be an even number of pixels, got {patch_size}")
        if not 0 < angle_step <= 90:
            raise InputError(f"angle_step must be in (0, 90] degrees, got {angle_step}")
        self.patch_size = patch_size
        self.augmentation = augmentation or AugmentationSettings()
        self.rotate = self.augmentation.rotate
        self.bin_count = max(1, round(90 / angle_step)) if self.rotate else 1
        self.bin_width = 90.0 / self.bin_count
        self.rng = np.random.default_rng(seed)
        self.rejected = 0  # cut patches that held an unannotated pixel after all (re-drawn)
        self._augment = Augmenter(self.augmentation)
        norm = normalization or IntensityNormalization()
        self.sources = [
            _Source(norm.normalize_section(gt.em), gt.labels != UNANNOTATED, gt.labels) for gt in images
        ]
        half = patch_size // 2
        self._offsets = np.stack(
            np.meshgrid(np.arange(-half, half), np.arange(-half, half), indexing="ij"), axis=0
        ).reshape(2, -1).astype(np.float64)
        self._bin_counts: dict[int, np.ndarray] = {}
        self._empty_bins: set[int] = set()
        if self.bin_total(0) == 0 and not any(self.bin_total(b) for b in range(1, self.bin_count)):
            largest = self.largest_patch_size()
            raise InputError(
                f"no {patch_size}x{patch_size} patch fits wholly inside the annotated regions; paint larger "
                f"regions or choose a smaller patch size (the largest that fits is {largest} px)"
            )

    # -- valid centres -------------------------------------------------------------
    def _radius(self) -> float:
        """Chessboard radius a centre needs: P/2 for fixed patches, grown to cover a bin."""
        half = self.patch_size / 2
        if not self.rotate:
            return half
        spread = math.radians(self.bin_width / 2)
        return half * (math.cos(spread) + math.sin(spread)) + ROUNDING_MARGIN

    def centres(self, source: int, angle_bin: int) -> CentreSet:
        """The valid centres of image ``source`` for angle bin ``angle_bin`` (cached)."""
        src = self.sources[source]
        found = src.bins.get(angle_bin)
        if found is None:
            found = src.bins[angle_bin] = CentreSet(self._valid_mask(src.annotated, angle_bin * self.bin_width))
        return found

    def bin_counts(self, angle_bin: int) -> np.ndarray:
        """Number of valid centres of every image for ``angle_bin`` (computed once)."""
        counts = self._bin_counts.get(angle_bin)
        if counts is None:
            counts = np.array([self.centres(i, angle_bin).count for i in range(len(self.sources))], float)
            self._bin_counts[angle_bin] = counts
        return counts

    def bin_total(self, angle_bin: int) -> int:
        """Number of valid centres over all images for ``angle_bin``."""
        return int(self.bin_counts(angle_bin).sum())

    def warm_up(self) -> None:
        """Compute every valid-centre mask now rather than on first use."""
        for angle_bin in range(self.bin_count):
            self.bin_counts(angle_bin)

    def _valid_mask(self, annotated: np.ndarray, angle: float) -> np.ndarray:
        radius = self._radius()
        if angle == 0.0:
            padded = np.pad(annotated, 1)  # outside the image counts as unannotated
            distance = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
            return distance > radius
        h, w = annotated.shape
        rot = _rotation(angle)
        centre = np.array([(h - 1) / 2, (w - 1) / 2])
        # The rotated frame must hold the whole image, plus a border of unannotated pixels.
        side = int(math.ceil(math.hypot(h, w))) + 4
        frame_centre = np.array([(side - 1) / 2, (side - 1) / 2])
        # Frame pixel q shows image pixel rot @ (q - frame_centre) + centre.
        seen = ndimage.affine_transform(
            annotated.view(np.uint8), rot, offset=centre - rot @ frame_centre, output_shape=(side, side), order=0
        )
        fits = (ndimage.distance_transform_cdt(seen, metric="chessboard") > radius).view(np.uint8)
        valid = ndimage.affine_transform(
            fits, rot.T, offset=frame_centre - rot.T @ centre, output_shape=(h, w), order=0
        )
        return valid.astype(bool) & annotated

    def largest_patch_size(self) -> int:
        """The largest even patch side that fits axis-aligned somewhere in the annotation."""
        best = 0
        for src in self.sources:
            distance = ndimage.distance_transform_cdt(np.pad(src.annotated, 1), metric="chessboard")
            best = max(best, int(distance.max()))
        return max(0, 2 * (best - 1))

    # -- cutting patches --------------------------------------------------------------
    def _cut(self, src: _Source, centre: tuple[int, int], angle: float) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch_size
        half = p // 2
        y, x = centre
        if angle == 0.0:
            window = np.s_[y - half : y + half, x - half : x + half]
            return src.image[window].copy(), src.labels[window].copy()
        coords = _rotation(angle) @ self._offsets + np.array([[y], [x]], float)
        # Image and labels take the same nearest pixel: a bilinear image beside
        # nearest-neighbour labels is off by up to 0.7 px, which matters for membranes
        # 2-5 px wide (docs/design-notes.md). Class values are never interpolated.
        rows, cols = np.rint(coords).astype(np.intp)
        h, w = src.labels.shape
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        labels = np.full(p * p, UNANNOTATED, np.uint8)
        labels[inside] = src.labels[rows[inside], cols[inside]]
        image = src.image[np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)].reshape(p, p)
        return image.astype(np.float32, copy=False), labels.reshape(p, p)

    def _draw_angle(self) -> tuple[int, float]:
        """A random angle bin holding valid centres somewhere, and an angle in it.

        Bins are equally likely (so are angles); the image is drawn afterwards in
        proportion to its valid centres at that angle, so that at every angle each
        valid centre of the whole set is equally likely.
        """
        if not self.rotate:
            return 0, 0.0
        while True:  # terminates: the constructor found at least one non-empty bin
            angle_bin = int(self.rng.choice([b for b in range(self.bin_count) if b not in self._empty_bins]))
            if self.bin_total(angle_bin):
                angle = (angle_bin + self.rng.uniform(-0.5, 0.5)) * self.bin_width
                return angle_bin, (angle + 90.0 * int(self.rng.integers(4))) % 360.0
            self._empty_bins.add(angle_bin)

    def sample(self) -> Patch:
        """Draw one patch (augmented as configured)."""
        for _ in range(MAX_REDRAWS):
            angle_bin, angle = self._draw_angle()
            counts = self.bin_counts(angle_bin)
            source = int(self.rng.choice(len(self.sources), p=counts / counts.sum()))
            centre = self.centres(source, angle_bin).draw(self.rng)
            image, labels = self._cut(self.sources[source], centre, angle)
            if labels.min() == UNANNOTATED:
                self.rejected += 1
                continue
            image, labels = self._augment(image, labels, self.rng)
            return Patch(image, labels, source, centre, angle)
        raise InputError(
            f"could not cut a fully annotated {self.patch_size}px patch in {MAX_REDRAWS} tries; "
            "the annotated regions are too thin for rotated patches: choose a smaller patch size"
        )

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart the random stream (cached masks are kept): training reseeds per epoch
        so that a resumed run draws what an uninterrupted one would have drawn."""
        self.rng = np.random.default_rng(seed)
        for src in self.sources:
            for centre_set in src.bins.values():
                centre_set.restart()

    def __iter__(self) -> Iterator[Patch]:
        while True:
            yield self.sample()

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` patches stacked: images (N, P, P) float32 and labels (N, P, P) uint8."""
        patches = [self.sample() for _ in range(size)]
        return np.stack([p.image for p in patches]), np.stack([p.labels for p in patches])
