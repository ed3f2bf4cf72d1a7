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

How much room the painting offers is measured once per (image, bin) as the largest
chessboard distance in that bin's frame (:meth:`PatchSampler.room`); a patch size fits
when some bin's room exceeds its radius. The same measure picks the patch size when
none is given (the largest that fits, :data:`AUTO_LARGEST` at most) and says, when
nothing fits, how wide to paint (:func:`width_needed`).

Patches that reach into unpainted EM (``min_painted`` below 1, for unpainted-pixel
learning, :mod:`membraind.nn.unpainted`) are cut axis-aligned (the flips and transposes
still turn them 8 ways): their valid centres are those whose window lies inside the
image with at least ``min_painted`` of its pixels painted, a box filter of the painted
mask. Their unpainted pixels keep class 0, which the supervised loss ignores.

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
#: The automatic patch size is at most this: larger patches trained no better on ISBI and
#: take longer per step (docs/design-notes.md, "Defaults chosen for speed (issue 3)").
AUTO_LARGEST = 128
#: ... and at least this: a smaller patch holds too little of a cell around its membranes.
AUTO_SMALLEST = 32


@dataclass
class Patch:
    """One training patch: normalised image, class labels, and where it came from."""

    image: np.ndarray  # float32 (P, P) in [0, 1]
    labels: np.ndarray  # uint8 (P, P); UNANNOTATED only where patches may reach into unpainted EM
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


def angle_bins(angle_step: float, rotate: bool) -> int:
    """How many angle bins cover 90 degrees in steps of about ``angle_step`` (1 without rotation)."""
    return max(1, round(90 / angle_step)) if rotate else 1


def patch_radius(patch_size: int, rotate: bool, bin_width: float) -> float:
    """The chessboard room a centre needs for a ``patch_size`` patch: P/2 for fixed patches,
    grown so that every angle of a ``bin_width``-degree bin fits (and for rounding)."""
    half = patch_size / 2
    if not rotate:
        return half
    spread = math.radians(bin_width / 2)
    return half * (math.cos(spread) + math.sin(spread)) + ROUNDING_MARGIN


def width_needed(patch_size: int, rotate: bool, bin_width: float) -> int:
    """How wide (px) a painted stroke must be for ``patch_size`` patches to fit in it.

    A straight stroke of this width, in any direction, has room for the patch: seen in
    the frame of the nearest angle bin it is tilted by up to half a bin, which narrows its
    room by ``cos + sin`` of that tilt; two more pixels cover the distance transform's
    rounding. Without rotation the patch is never turned, so the stroke must be that wide
    along both image axes.
    """
    tilt = math.radians(bin_width / 2) if rotate else 0.0
    return math.floor(2 * patch_radius(patch_size, rotate, bin_width) * (math.cos(tilt) + math.sin(tilt))) + 2


def patch_size_note(sampler: "PatchSampler") -> str:
    """What to tell the user about a sampler's patch size, e.g. "patch size 96 px, chosen from the painted regions"."""
    return f"patch size {sampler.patch_size} px" + (", chosen from the painted regions" if sampler.automatic else "")


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
    ``patch_size`` None chooses the size from the painted regions: the largest multiple
    of ``multiple`` (the network's size step) from :data:`AUTO_SMALLEST` up to
    ``largest`` that fits (``automatic`` is then True). Sizes the painting cannot hold
    raise an :class:`InputError` saying what fits and how wide to paint.
    ``min_painted`` below 1 lets patches reach into unpainted EM: each holds at least that
    share of painted pixels and lies inside its image (see the module docstring).
    """

    def __init__(
        self,
        images: Sequence[GroundTruthImage],
        patch_size: int | None,
        normalization: IntensityNormalization | None = None,
        augmentation: AugmentationSettings | None = None,
        angle_step: float = 5.0,
        seed: int | Sequence[int] = 0,
        *,
        multiple: int = 2,
        largest: int = AUTO_LARGEST,
        min_painted: float = 1.0,
    ) -> None:
        if patch_size is not None and (patch_size < 2 or patch_size % 2):
            raise InputError(f"patch size must be an even number of pixels, got {patch_size}")
        if not 0 < angle_step <= 90:
            raise InputError(f"angle_step must be in (0, 90] degrees, got {angle_step}")
        if multiple < 2 or multiple % 2:
            raise InputError(f"the patch size step must be an even number of pixels, got {multiple}")
        if not 0 < min_painted <= 1:
            raise InputError(f"min_painted must be a share in (0, 1], got {min_painted}")
        self.min_painted = min_painted
        self.partial = min_painted < 1  # patches may reach into unpainted EM
        self.augmentation = augmentation or AugmentationSettings()
        self.rotate = self.augmentation.rotate and not self.partial
        self.bin_count = angle_bins(angle_step, self.rotate)
        self.bin_width = 90.0 / self.bin_count
        self.multiple = multiple
        self.rng = np.random.default_rng(seed)
        self.rejected = 0  # cut patches that held an unannotated pixel after all (re-drawn)
        self._augment = Augmenter(self.augmentation)
        norm = normalization or IntensityNormalization()
        self.sources = [
            _Source(norm.normalize_section(gt.em), gt.labels != UNANNOTATED, gt.labels) for gt in images
        ]
        self._rooms: dict[tuple[int, int], int] = {}
        self._bin_counts: dict[int, np.ndarray] = {}
        self._empty_bins: set[int] = set()
        self.automatic = patch_size is None
        self.patch_size = self._choose(largest) if patch_size is None else patch_size
        half = self.patch_size // 2
        self._offsets = np.stack(
            np.meshgrid(np.arange(-half, half), np.arange(-half, half), indexing="ij"), axis=0
        ).reshape(2, -1).astype(np.float64)
        if self.partial and not self.bin_total(0):
            raise InputError(
                f"no {self.patch_size}x{self.patch_size} patch inside the images holds {min_painted:.0%} painted pixels; "
                "paint more, or choose a smaller patch size"
            )
        if not any(self.bin_total(b) for b in range(self.bin_count)):
            largest_fit = self.largest_patch_size()
            raise InputError(
                f"no {self.patch_size}x{self.patch_size} patch fits wholly inside the annotated regions "
                f"at the angles training cuts patches ({self._fits(largest_fit)}); {self._paint_wider(self.patch_size)}"
                + (f", or choose a patch size of {largest_fit} px" if largest_fit else "")
            )

    # -- room and patch size ---------------------------------------------------------
    def _radius(self, patch_size: int) -> float:
        return patch_radius(patch_size, self.rotate, self.bin_width)

    def width_needed(self, patch_size: int) -> int:
        """How wide (px) painted strokes must be for ``patch_size`` patches (:func:`width_needed`)."""
        return width_needed(patch_size, self.rotate, self.bin_width)

    def _fits(self, largest_fit: int) -> str:
        return f"the largest that fits is {largest_fit} px" if largest_fit else f"not even {self.multiple} px fits"

    def _paint_wider(self, patch_size: int) -> str:
        across = "in any direction" if self.rotate else "both across and down (rotation is off)"
        return f"paint regions at least {self.width_needed(patch_size)} px wide {across} for {patch_size} px patches"

    def room(self, source: int, angle_bin: int) -> int:
        """The largest chessboard distance from an unannotated pixel in image ``source``, seen
        in the frame of ``angle_bin``: a patch size fits the bin where this exceeds its radius."""
        found = self._rooms.get((source, angle_bin))
        if found is None:
            found = int(self._room_map(source, angle_bin).max(initial=0))
        return found

    def largest_fit(self, room: int, largest: int | None = None) -> int:
        """The largest multiple of :attr:`multiple` (at most ``largest``) that fits ``room`` (0: none)."""
        size = 0
        while (largest is None or size + self.multiple <= largest) and self._radius(size + self.multiple) < room:
            size += self.multiple
        return size

    def largest_patch_size(self) -> int:
        """The largest patch size (a multiple of :attr:`multiple`) that fits somewhere in the
        annotation at one of the angles the sampler uses (0 when none does)."""
        most = max((self.room(i, b) for b in range(self.bin_count) for i in range(len(self.sources))), default=0)
        return self.largest_fit(most)

    def _choose(self, largest: int) -> int:
        """The automatic patch size: the largest that fits, from AUTO_SMALLEST up to ``largest``
        (patches reaching into unpainted EM: the largest that fits inside the largest image)."""
        smallest = max(AUTO_SMALLEST, self.multiple)
        largest = max(largest - largest % self.multiple, smallest)
        if self.partial:
            side = max(min(src.annotated.shape) for src in self.sources)
            return max(min(largest, side - side % self.multiple), smallest)
        most = 0
        for angle_bin in range(self.bin_count):  # the unrotated bin first: it is the cheapest
            for source in range(len(self.sources)):
                most = max(most, self.room(source, angle_bin))
                if self._radius(largest) < most:
                    return largest  # nothing larger is wanted: stop measuring
        chosen = self.largest_fit(most, largest)
        if chosen < smallest:
            raise InputError(
                f"the painted regions are too narrow for training: patches are at least {smallest} px "
                f"and {self._fits(chosen)}; {self._paint_wider(smallest)}"
            )
        return chosen

    # -- valid centres -------------------------------------------------------------
    def centres(self, source: int, angle_bin: int) -> CentreSet:
        """The valid centres of image ``source`` for angle bin ``angle_bin`` (cached)."""
        src = self.sources[source]
        found = src.bins.get(angle_bin)
        if found is None:
            valid = self._partial_centres(source) if self.partial else self._room_map(source, angle_bin) > self._radius(self.patch_size)
            found = src.bins[angle_bin] = CentreSet(valid)
        return found

    def _partial_centres(self, source: int) -> np.ndarray:
        """Centres whose (axis-aligned) window lies inside the image and holds at least
        ``min_painted`` painted pixels."""
        annotated = self.sources[source].annotated
        valid = np.zeros(annotated.shape, bool)
        p, half = self.patch_size, self.patch_size // 2
        h, w = annotated.shape
        if h < p or w < p:
            return valid
        # For an even size the filter's window is [i - P/2, i + P/2), as _cut's.
        share = ndimage.uniform_filter(annotated.astype(np.float32), size=p, mode="constant")
        inside = np.s_[half : h - half + 1, half : w - half + 1]
        valid[inside] = share[inside] >= self.min_painted - 1e-6
        return valid

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

    def _room_map(self, source: int, angle_bin: int) -> np.ndarray:
        """Per pixel of image ``source``, the chessboard distance to the nearest unannotated
        pixel in the frame of ``angle_bin`` (0 outside the annotation); records its maximum."""
        annotated = self.sources[source].annotated
        angle = angle_bin * self.bin_width
        if angle == 0.0:
            padded = np.pad(annotated, 1)  # outside the image counts as unannotated
            room = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
        else:
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
            distance = ndimage.distance_transform_cdt(seen, metric="chessboard")
            # Nearest-neighbour back into the image: thresholding commutes with it, so
            # room > radius is exactly the valid-centre mask of that radius.
            room = ndimage.affine_transform(
                distance, rot.T, offset=frame_centre - rot.T @ centre, output_shape=(h, w), order=0
            )
            room[~annotated] = 0
        self._rooms[source, angle_bin] = int(room.max(initial=0))
        return room

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
            if not self.partial and labels.min() == UNANNOTATED:
                self.rejected += 1
                continue
            image, labels = self._augment(image, labels, self.rng)
            return Patch(image, labels, source, centre, angle)
        raise InputError(
            f"could not cut a fully annotated {self.patch_size}px patch in {MAX_REDRAWS} tries; "
            f"the annotated regions are too thin for rotated patches: {self._paint_wider(self.patch_size)}, "
            "or choose a smaller patch size"
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
