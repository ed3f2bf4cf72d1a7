"""2D instance segmentation of one section: seeded watershed on membrane probability.

The method of mEMbrain's ``compute2dsegs.m``: smooth the membrane-high probability,
put one seed in every basin deeper than ``h`` (h-minima), flood from the seeds with an
8-connected watershed, clear pixels that are membrane, and drop tiny segments. Sections
larger than ``window`` are flooded in overlapping windows whose ids are then matched in
the overlaps, so a cell crossing a window border keeps one id.

Unlike the original, the tile grid is not hard-coded, segments are split into connected
pieces before the size filter, and small pieces join the neighbour they touch most
instead of vanishing when they have one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from skimage.measure import label
from skimage.morphology import h_minima
from skimage.segmentation import relabel_sequential, watershed

from membraind.errors import InputError
from membraind.segment.settings import Segment2DSettings

__all__ = ["segment_section", "remove_small_segments", "as_probability", "Segment2DSettings"]

_EIGHT = np.ones((3, 3), dtype=bool)


def segment_section(membrane: np.ndarray, settings: Segment2DSettings | None = None) -> np.ndarray:
    """Cell ids of one section from its membrane probability.

    ``membrane`` is ``(H, W)``, membrane high: floats in [0, 1], or uint8 (read as
    value / 255). Returns uint32 ids, 0 = boundary (membrane or dropped), cells
    numbered 1..N. Sections with a side longer than ``settings.window`` are processed
    in overlapping windows; the result is nearly the whole-section one.
    """
    settings = settings or Segment2DSettings()
    probability = as_probability(membrane)
    if max(probability.shape) <= settings.window:
        labels = _flood(probability, settings)
    else:
        labels = _flood_in_windows(probability, settings)
    # Pieces of one id cut apart by membrane are different cells in 2D.
    labels = label(labels, background=0, connectivity=2)
    labels = remove_small_segments(labels, settings.min_size)
    return relabel_sequential(labels)[0].astype(np.uint32)


def remove_small_segments(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Ids with fewer than ``min_size`` pixels join the neighbour they share most border with.

    "Neighbour" means directly 4-adjacent, with no boundary (0) pixel in between, so a
    fragment of an over-split cell joins the rest of it, while a speck walled in by
    membrane becomes 0. Chains of small segments join together; what is still small
    after that becomes 0. Returns a new array with the same ids otherwise.
    """
    sizes = np.bincount(labels.ravel())
    small = (sizes < min_size) & (sizes > 0)
    small[0] = False
    if not small.any():
        return labels.copy()
    source, target = _contacts(labels, small)
    lookup = np.arange(sizes.size)
    if source.size:
        graph = sparse.coo_array((np.ones(source.size), (source, target)), shape=(sizes.size, sizes.size))
        lookup = _largest_member(connected_components(graph, directed=False)[1], sizes)
    merged = lookup[labels]
    still_small = np.bincount(merged.ravel()) < min_size
    still_small[0] = False
    merged[still_small[merged]] = 0
    return merged


def _largest_member(component: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """For each id, the largest id of its component, so joined ids take the big one's id."""
    order = np.lexsort((sizes, component))  # by component, largest member last
    grouped = component[order]
    last = np.r_[grouped[1:] != grouped[:-1], True]
    representative = np.empty(int(component.max()) + 1, dtype=np.int64)
    representative[grouped[last]] = order[last]
    return representative[component]


def _contacts(labels: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each small id touching another id: that id and the neighbour it touches most."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0) & (small[a] | small[b])
        a, b = a[touch], b[touch]
        pairs += [np.stack([a, b]), np.stack([b, a])]
    both = np.concatenate(pairs, axis=1)
    both = both[:, small[both[0]]]
    if not both.size:
        return both[0], both[1]
    unique, counts = _pair_counts(both[0], both[1])
    order = np.lexsort((-counts, unique[0]))  # by small id, most shared border first
    unique = unique[:, order]
    first = np.unique(unique[0], return_index=True)[1]
    return unique[0, first], unique[1, first]


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct id pairs ``(2, n)`` of two equally long id arrays, and how often each occurs."""
    if not a.size:
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
    span = int(b.max()) + 1  # one int64 key per pair sorts far faster than unique(axis=1)
    keys, counts = np.unique(a.astype(np.int64) * span + b, return_counts=True)
    return np.stack([keys // span, keys % span]), counts


def as_probability(membrane: np.ndarray) -> np.ndarray:
    """``membrane`` as float32 in [0, 1], or an :class:`InputError` saying what is wrong."""
    array = np.asarray(membrane)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"membrane probability must be one non-empty 2D section; got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"membrane probability must be float in [0, 1] or uint8; got {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError("membrane probability holds NaN or infinite values; check the model's output")
    if array.min() < 0 or array.max() > 1:
        raise InputError(
            f"membrane probability must lie in [0, 1]; got {array.min()}..{array.max()}; scale it first (membrane high)"
        )
    return array


def _flood(probability: np.ndarray, settings: Segment2DSettings) -> np.ndarray:
    """Watershed ids (int64, 1..n, 0 = membrane) of one window, before size filtering."""
    smooth = ndimage.gaussian_filter(probability, settings.sigma) if settings.sigma > 0 else probability
    seeds = label(h_minima(smooth, settings.h, footprint=_EIGHT), connectivity=2)
    if not seeds.any():  # flat window: h_minima finds no minimum, so it is all one basin
        seeds = np.ones(smooth.shape, dtype=seeds.dtype)
    labels = watershed(smooth, seeds, connectivity=2).astype(np.int64)
    labels[smooth > settings.membrane_threshold] = 0
    return labels


def _windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open ranges of at most ``window`` covering ``length``, neighbours sharing >= ``overlap``."""
    if length <= window:
        return [(0, length)]
    count = -(-(length - overlap) // (window - overlap))
    starts = np.floor(np.linspace(0, length - window, count)).astype(int)
    return [(int(s), int(s) + window) for s in starts]


def _cuts(ranges: list[tuple[int, int]]) -> list[int]:
    """Core limits: each window owns the pixels up to the middle of its overlaps."""
    middles = [(ranges[i + 1][0] + ranges[i][1]) // 2 for i in range(len(ranges) - 1)]
    return [0, *middles, ranges[-1][1]]


def _flood_in_windows(probability: np.ndarray, settings: Segment2DSettings) -> np.ndarray:
    """Watershed ids of a large section, flooded window by window and matched in the overlaps.

    Each window gets its own id range. Neighbouring windows are compared in a band
    ``overlap / 2`` wide around the line where their cores meet (far from both windows'
    edges, where each sees enough context); ids that mostly coincide there are joined.
    """
    rows = _windows(probability.shape[0], settings.window, settings.overlap)
    cols = _windows(probability.shape[1], settings.window, settings.overlap)
    row_cuts, col_cuts = _cuts(rows), _cuts(cols)
    half = settings.overlap // 4
    out = np.zeros(probability.shape, dtype=np.int64)
    below: dict[int, np.ndarray] = {}  # column -> bottom band of the window above
    pairs: list[np.ndarray] = []
    offset = 0
    for i, (y0, y1) in enumerate(rows):
        right: np.ndarray | None = None  # right band of the window to the left
        for j, (x0, x1) in enumerate(cols):
            ids = _flood(probability[y0:y1, x0:x1], settings)
            ids[ids > 0] += offset
            offset = int(ids.max(initial=offset)) + 1
            core_y, core_x = slice(row_cuts[i], row_cuts[i + 1]), slice(col_cuts[j], col_cuts[j + 1])
            out[core_y, core_x] = ids[core_y.start - y0 : core_y.stop - y0, core_x.start - x0 : core_x.stop - x0]
            if j > 0:
                pairs.append(_matches(right, ids[:, col_cuts[j] - half - x0 : col_cuts[j] + half - x0]))
            if i > 0:
                pairs.append(_matches(below[j], ids[row_cuts[i] - half - y0 : row_cuts[i] + half - y0]))
            right = ids[:, col_cuts[j + 1] - half - x0 : col_cuts[j + 1] + half - x0]
            below[j] = ids[row_cuts[i + 1] - half - y0 : row_cuts[i + 1] + half - y0]
    edges = np.concatenate(pairs, axis=1)
    graph = sparse.coo_array((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(offset, offset))
    lookup = connected_components(graph, directed=False)[1] + 1
    lookup[0] = 0
    return lookup[out]


def _matches(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Id pairs (2, n) of two windows' views of the same band that denote the same cell.

    Two ids match when each is the other's largest overlap. Where one window merged
    two cells that the other keeps apart (a seed it could not see), only one of them
    is joined, so the disagreement costs a small split near the border instead of a
    merge of two whole cells.
    """
    both = (first > 0) & (second > 0)
    unique, shared = _pair_counts(first[both], second[both])
    mutual = _is_best(unique[0], shared) & _is_best(unique[1], shared)
    return unique[:, mutual]


def _is_best(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mask of the entries holding the largest count of their id (the first one on ties)."""
    order = np.lexsort((-counts, ids))
    first = order[np.unique(ids[order], return_index=True)[1]]
    mask = np.zeros(ids.size, dtype=bool)
    mask[first] = True
    return mask
