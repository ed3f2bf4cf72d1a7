"""Deterministic synthetic EM stacks with exact instance and membrane labels.

The generator stands in for real data on machines that have none (demo runs) and
serves as a test fixture. A stack is a set of irregular cells that tile each section:

* cells come from a jittered hexagonal lattice of seed points; each pixel belongs to
  the nearest seed, measured in coordinates bent by a smooth random displacement
  field, so cell borders are curved rather than straight Voronoi edges;
* seeds wander a little from section to section and the displacement field changes
  slowly with z, so a cell keeps its id (seed index + 1) and roughly its shape across
  consecutive sections;
* membranes are the pixels within half the local membrane thickness (a smooth field,
  about 2..6 px) of a border between two cells; the distance is the exact distance to
  the bisector in bent space, rescaled by the local stretch of the bending so that it
  approximates the distance in the image;
* some triple junctions open into small extracellular spaces (instance 0) lined by
  membrane;
* the EM image is painted from the labels (cytoplasm, dark membranes, light ECS, dark
  organelles kept clear of membranes), then blurred, given a slow intensity drift and
  noise, and quantised to uint8.

Everything is drawn from one ``np.random.default_rng(seed)`` in a fixed order, so the
same arguments always give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from skimage.measure import label as label_regions

from membraind.groundtruth.classes import INTERIOR, MEMBRANE, write_label_image
from membraind.groundtruth.classes import THIRD as ECS
from membraind.volumes.image_files import write_image

# Share of triple junctions that open into extracellular space, and the range of
# the opening's "radius" (distance from the two other borders; px).
_ECS_SHARE = 0.3
_ECS_RADIUS = (2.0, 5.5)
_ECS_MIN_PIXELS = 5
# Membrane thickness range (px) across the image.
_THICKNESS = (2.0, 6.0)
# Organelles keep at least this many px of cytoplasm to the nearest membrane/ECS
# pixel, so they never read as part of a membrane.
_ORGANELLE_CLEARANCE = 3.0


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields instead
class SyntheticStack:
    """A synthetic EM stack and its exact ground truth.

    Attributes:
        em: ``(Z, H, W)`` uint8 grayscale EM; membranes are dark.
        instances: ``(Z, H, W)`` uint32 cell ids (>= 1, stable across sections);
            0 marks extracellular space (ECS). Ids tile every non-ECS pixel, so
            borders between ids run through the middle of membranes.
        labels: ``(Z, H, W)`` uint8 classes: 1 = cell interior, 2 = membrane, 3 = ECS.
    """

    em: np.ndarray
    instances: np.ndarray
    labels: np.ndarray


class _EvolvingField:
    """A smooth Gaussian random field over the section plane that drifts slowly in z.

    Each section's field has zero mean and roughly unit standard deviation. Changing
    with z as ``sum_k A_k cos(w_k z + p_k) + B_k sin(w_k z + p_k)`` over independent
    fields ``A_k, B_k`` keeps the statistics the same in every section while
    neighbouring sections stay highly correlated (correlation ``cos w_k``); several
    incommensurate frequencies keep long stacks from visibly repeating.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int],
        scale: float,
        omegas: np.ndarray,
    ) -> None:
        # Smoothing noise on a coarse grid and upsampling it with a separable Gaussian
        # (two small matrix products) is far cheaper than a wide Gaussian on the full
        # grid, and indistinguishable for fields this smooth.
        step = max(1, int(scale / 3.0))
        sigma = scale / step
        pad = int(np.ceil(3.0 * sigma)) + 1
        core = (shape[0] // step + 6, shape[1] // step + 6)
        padded = (core[0] + 2 * pad, core[1] + 2 * pad)
        self._omegas = np.asarray(omegas, dtype=np.float64)
        self._phases = rng.uniform(0.0, 2.0 * np.pi, self._omegas.size)
        self._up_y = self._upsampler(shape[0], core[0], step)
        self._up_x = self._upsampler(shape[1], core[1], step)
        bases = []
        for _ in range(2 * self._omegas.size):
            smooth = ndimage.gaussian_filter(rng.standard_normal(padded), sigma, mode="wrap")
            smooth = smooth[pad : pad + core[0], pad : pad + core[1]]
            bases.append(smooth / self._upsample(smooth).std())
        self._bases = np.stack(bases)

    @staticmethod
    def _upsampler(size: int, coarse_size: int, step: int) -> sparse.csr_matrix:
        # Sparse, so the products stay cheap and single-threaded: a threaded BLAS
        # fighting other processes for the cores was many times slower.
        if step == 1:
            return sparse.eye(size, coarse_size, k=3, format="csr")
        centre = np.arange(size) / step + 3.0  # 3 coarse cells of margin for the kernel
        offset = centre[:, None] - np.arange(coarse_size)[None, :]
        weights = np.exp(-0.5 * (offset / 0.7) ** 2)
        weights[np.abs(offset) > 2.5] = 0.0
        return sparse.csr_matrix(weights / weights.sum(axis=1, keepdims=True))

    def _upsample(self, coarse: np.ndarray) -> np.ndarray:
        rows = self._up_y @ coarse
        return np.ascontiguousarray((self._up_x @ rows.T).T)

    def at(self, z: float) -> np.ndarray:
        """The field in section ``z`` as a float64 array of the section's shape."""
        angle = self._omegas * z + self._phases
        weights = np.concatenate([np.cos(angle), np.sin(angle)]) / np.sqrt(self._omegas.size)
        return self._upsample(np.tensordot(weights, self._bases, axes=1))


def _omegas(rng: np.random.Generator, low: float, high: float, count: int = 3) -> np.ndarray:
    return rng.uniform(low, high, count)


def _lattice_seeds(
    rng: np.random.Generator, shape: tuple[int, int], cell_diameter: float, margin: float
) -> np.ndarray:
    # A hexagonal lattice covers the plane evenly; the 0.95 makes the mean
    # area-equivalent diameter of a hexagonal cell match cell_diameter.
    spacing = 0.95 * cell_diameter
    row_step = spacing * np.sqrt(3.0) / 2.0
    ys = np.arange(-margin, shape[0] + margin, row_step)
    points = []
    for row, y in enumerate(ys):
        xs = np.arange(-margin, shape[1] + margin, spacing) + (spacing / 2.0) * (row % 2)
        points.append(np.column_stack([np.full(xs.size, y), xs]))
    seeds = np.concatenate(points)
    # Uniform jitter of +-0.22 spacing gives cell areas that vary by about +-30%
    # without producing sliver cells.
    return seeds + rng.uniform(-0.22, 0.22, seeds.shape) * spacing


def _circumcentres(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    bp, cp = b - a, c - a
    denom = 2.0 * (bp[:, 0] * cp[:, 1] - bp[:, 1] * cp[:, 0])
    denom = np.where(np.abs(denom) < 1e-9, 1e-9, denom)  # collinear seeds: centre far away
    bb = (bp**2).sum(1)
    cc = (cp**2).sum(1)
    p = (cp[:, 1] * bb - bp[:, 1] * cc) / denom
    q = (bp[:, 0] * cc - cp[:, 0] * bb) / denom
    return a + np.column_stack([p, q])


def _paint_ellipse(
    region: np.ndarray,
    centre: tuple[float, float],
    half_len: float,
    half_wid: float,
    angle: float,
    reach: int | None = None,
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Slices of ``region`` around an ellipse and the ellipse mask within them.

    ``reach`` (px from the centre) sets the window; by default it just holds the ellipse.
    """
    if reach is None:
        reach = int(np.ceil(half_len)) + 1
    cy, cx = centre
    y0, y1 = max(0, int(cy) - reach), min(region.shape[0], int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(region.shape[1], int(cx) + reach + 1)
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = (u / half_len) ** 2 + (v / half_wid) ** 2 <= 1.0
    return (slice(y0, y1), slice(x0, x1)), mask


def _merge_stray_fragments(inst: np.ndarray) -> None:
    """Give detached bits of a cell (in place) to the neighbour they touch most.

    Near-degenerate junctions, ECS openings and strong bending can cut a few pixels
    off a cell; a cell in two pieces inside the image is not what the ground truth
    should say. Pieces touching the image edge stay: the cell may join up outside.
    """
    pieces = label_regions(inst, background=0, connectivity=1)
    n_pieces = int(pieces.max())
    if n_pieces == 0:
        return
    owner = np.zeros(n_pieces + 1, np.int64)
    owner[pieces.ravel()] = inst.ravel()  # all pixels of a piece share one id
    owner = owner[1:]
    size = np.bincount(pieces.ravel(), minlength=n_pieces + 1)[1:]
    largest = np.zeros(int(owner.max()) + 1, np.int64)
    np.maximum.at(largest, owner, size)
    on_edge = np.zeros(n_pieces + 1, bool)
    on_edge[np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]])] = True
    cross = ndimage.generate_binary_structure(2, 1)
    windows = ndimage.find_objects(pieces)
    for k in np.flatnonzero((size < largest[owner]) & ~on_edge[1:]):
        window = tuple(
            slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(windows[k], inst.shape)
        )
        piece = pieces[window] == k + 1
        ring = ndimage.binary_dilation(piece, cross) & ~piece
        neighbours = inst[window][ring]
        neighbours = neighbours[neighbours != owner[k]]
        cells = neighbours[neighbours > 0]
        if cells.size:
            values, counts = np.unique(cells, return_counts=True)
            inst[window][piece] = values[np.argmax(counts)]
        else:
            inst[window][piece] = 0


def generate_stack(
    seed: int = 0,
    sections: int = 8,
    shape: tuple[int, int] = (512, 512),
    cell_diameter: float = 70.0,
) -> SyntheticStack:
    """Generate a synthetic EM stack of irregular cells with exact labels.

    Args:
        seed: seed of the only random generator used; equal arguments give
            identical arrays.
        sections: number of sections (Z).
        shape: ``(H, W)`` of each section in pixels.
        cell_diameter: mean cell diameter in pixels; cell sizes vary about +-30%.

    Returns:
        A :class:`SyntheticStack` with ``em`` (uint8), ``instances`` (uint32) and
        ``labels`` (uint8: 1 interior, 2 membrane, 3 ECS), each ``(Z, H, W)``.

    Raises:
        ValueError: when ``sections`` < 1, a side of ``shape`` < 16 or
            ``cell_diameter`` is below 16 px or above the image's larger side.
    """
    height, width = (int(shape[0]), int(shape[1]))
    if sections < 1:
        raise ValueError(f"sections must be at least 1, got {sections}")
    if height < 16 or width < 16:
        raise ValueError(f"shape must be at least (16, 16), got {shape}")
    if not 16.0 <= cell_diameter <= max(height, width):
        raise ValueError(
            f"cell_diameter must lie between 16 and the image's larger side "
            f"({max(height, width)}), got {cell_diameter}"
        )
    rng = np.random.default_rng(seed)
    diameter = float(cell_diameter)
    sec_shape = (height, width)
    area_in_cells = height * width / diameter**2

    # Stack-wide random state, drawn once in a fixed order.
    seeds0 = _lattice_seeds(rng, sec_shape, diameter, margin=1.5 * diameter)
    n_seeds = seeds0.shape[0]
    # Seeds orbit their start point, so they move ~1-2 px per section yet never
    # wander far enough to swap places in long stacks.
    orbit_amp = rng.uniform(0.03, 0.12, (n_seeds, 2)) * diameter
    orbit_omega = rng.uniform(0.06, 0.2, (n_seeds, 1))
    orbit_phase = rng.uniform(0.0, 2.0 * np.pi, (n_seeds, 2))
    # Broad bending makes cells irregular; a weaker, finer one makes borders wavy.
    bend = [
        _EvolvingField(rng, sec_shape, 0.4 * diameter, _omegas(rng, 0.08, 0.2))
        for _ in range(2)
    ]
    wiggle = [
        _EvolvingField(rng, sec_shape, 0.25 * diameter, _omegas(rng, 0.15, 0.35))
        for _ in range(2)
    ]
    bend_amp, wiggle_amp = 0.15 * diameter, 0.06 * diameter
    thickness_field = _EvolvingField(rng, sec_shape, 0.8 * diameter, _omegas(rng, 0.05, 0.15))
    membrane_tone_field = _EvolvingField(rng, sec_shape, 0.8 * diameter, _omegas(rng, 0.1, 0.3))
    drift_field = _EvolvingField(
        rng, sec_shape, 0.5 * max(height, width), _omegas(rng, 0.02, 0.08)
    )
    # Per-seed numbers whose sums over a junction's three seeds (mod 1) are uniform and
    # independent of the order in which the seeds are found: the same junction opens
    # the same way in every section.
    ecs_pick = rng.uniform(0.0, 1.0, n_seeds)
    ecs_size = rng.uniform(0.0, 1.0, n_seeds)
    cell_tone = rng.uniform(0.6, 0.7, n_seeds)
    # Mitochondria are short tubes: each spans a few sections at a fixed place and is
    # drawn in a section only where it fits inside one cell clear of membranes.
    n_mito = int(round(area_in_cells * 3.0 * (sections + 4) / 4.0))
    mito_y = rng.uniform(0.0, height, n_mito)
    mito_x = rng.uniform(0.0, width, n_mito)
    mito_zc = rng.uniform(-2.0, sections + 1.0, n_mito)
    mito_zhalf = rng.uniform(1.0, 3.0, n_mito)
    mito_len = rng.uniform(8.0, 25.0, n_mito)
    mito_wid = np.minimum(rng.uniform(5.0, 9.0, n_mito), mito_len)
    mito_angle = rng.uniform(0.0, np.pi, n_mito)
    mito_tone = rng.uniform(0.35, 0.45, n_mito)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    em = np.empty((sections, height, width), np.uint8)
    instances = np.empty((sections, height, width), np.uint32)
    labels = np.empty((sections, height, width), np.uint8)

    for z in range(sections):
        seeds = seeds0 + orbit_amp * np.sin(orbit_omega * z + orbit_phase)
        uy = bend_amp * bend[0].at(z) + wiggle_amp * wiggle[0].at(z)
        ux = bend_amp * bend[1].at(z) + wiggle_amp * wiggle[1].at(z)
        wy, wx = (yy + uy).ravel(), (xx + ux).ravel()
        dist, idx = cKDTree(seeds).query(np.column_stack([wy, wx]), k=3)

        # Local Jacobian of the bending, to turn distances in bent space into image px.
        duy_dy, duy_dx = np.gradient(uy)
        dux_dy, dux_dx = np.gradient(ux)
        j_yy, j_yx = (1.0 + duy_dy).ravel(), duy_dx.ravel()
        j_xy, j_xx = dux_dy.ravel(), (1.0 + dux_dx).ravel()
        own = seeds[idx[:, 0]]
        border_dist = []
        for k in (1, 2):
            sep = own - seeds[idx[:, k]]
            sep_len = np.maximum(np.hypot(sep[:, 0], sep[:, 1]), 1e-9)
            # Exact distance to the bisector of the two seeds in bent space.
            bent = (dist[:, k] ** 2 - dist[:, 0] ** 2) / (2.0 * sep_len)
            ny, nx = sep[:, 0] / sep_len, sep[:, 1] / sep_len
            stretch = np.hypot(ny * j_yy + nx * j_xy, ny * j_yx + nx * j_xx)
            border_dist.append(bent / np.maximum(stretch, 1e-6))
        near_border = np.minimum(border_dist[0], border_dist[1])
        near_junction = np.maximum(border_dist[0], border_dist[1])

        t_field = thickness_field.at(z).ravel()
        # A section holds only a few independent patches of the field; standardising
        # it keeps every section's thicknesses spread over the whole range around the
        # middle, instead of a whole section coming out thin or thick by chance.
        t_field = (t_field - t_field.mean()) / max(t_field.std(), 1e-9)
        lo, hi = _THICKNESS
        thickness = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.tanh(1.2 * t_field)
        membrane = near_border < 0.5 * thickness

        # Extracellular space: near a chosen junction, within `radius` of both other
        # borders; capped by distance to the junction point so that borders meeting
        # at a shallow angle cannot stretch it into a long sliver.
        triple_sum = ecs_pick[idx].sum(1)
        chosen = (triple_sum - np.floor(triple_sum)) < _ECS_SHARE
        size_sum = ecs_size[idx].sum(1)
        radius = _ECS_RADIUS[0] + (_ECS_RADIUS[1] - _ECS_RADIUS[0]) * (
            size_sum - np.floor(size_sum)
        )
        ring_width = np.maximum(0.5 * thickness, 1.5)
        candidate = np.flatnonzero(chosen & (near_junction < radius + ring_width))
        centre = _circumcentres(
            seeds[idx[candidate, 0]], seeds[idx[candidate, 1]], seeds[idx[candidate, 2]]
        )
        to_centre = np.hypot(wy[candidate] - centre[:, 0], wx[candidate] - centre[:, 1])
        r_c = radius[candidate]
        close = to_centre < 2.5 * r_c
        ecs = np.zeros(height * width, bool)
        ecs[candidate[close & (near_junction[candidate] < r_c)]] = True
        membrane[candidate[close & (to_centre < 2.5 * r_c + ring_width[candidate])]] = True

        ecs = ecs.reshape(sec_shape)
        # Where the opening thins out along a border it leaves crumbs joined to it only
        # diagonally; they would be specks of ECS inside membrane, so they go back to
        # their cells.
        pieces, n_pieces = ndimage.label(ecs)
        if n_pieces:
            piece_size = np.bincount(pieces.ravel())
            piece_size[0] = 0
            ecs = piece_size[pieces] >= _ECS_MIN_PIXELS
        inst = (idx[:, 0] + 1).astype(np.uint32).reshape(sec_shape)
        inst[ecs] = 0
        _merge_stray_fragments(inst)
        ecs = inst == 0
        membrane = membrane.reshape(sec_shape)
        # Pixel-level guarantees the continuous distances can miss by a rounding
        # error: every pair of touching pixels of different cells is membrane, and
        # ECS is always lined by membrane.
        for axis in (0, 1):
            a = [slice(None), slice(None)]
            b = [slice(None), slice(None)]
            a[axis], b[axis] = slice(1, None), slice(None, -1)
            ia, ib = inst[tuple(a)], inst[tuple(b)]
            touch = (ia != ib) & (ia > 0) & (ib > 0)
            membrane[tuple(a)] |= touch
            membrane[tuple(b)] |= touch
        membrane |= ndimage.binary_dilation(ecs, structure=np.ones((3, 3), bool))
        membrane &= ~ecs

        lab = np.full(sec_shape, INTERIOR, np.uint8)
        lab[membrane] = MEMBRANE
        lab[ecs] = ECS

        image = _paint_section(
            rng,
            z,
            inst,
            lab,
            cell_tone,
            membrane_tone_field.at(z),
            drift_field.at(z),
            area_in_cells,
            (mito_y, mito_x, mito_zc, mito_zhalf, mito_len, mito_wid, mito_angle, mito_tone),
        )
        em[z], instances[z], labels[z] = image, inst, lab

    return SyntheticStack(em=em, instances=instances, labels=labels)


def _paint_section(
    rng: np.random.Generator,
    z: int,
    inst: np.ndarray,
    lab: np.ndarray,
    cell_tone: np.ndarray,
    membrane_field: np.ndarray,
    drift: np.ndarray,
    area_in_cells: float,
    mitos: tuple[np.ndarray, ...],
) -> np.ndarray:
    """Render one section's EM image from its labels."""
    height, width = lab.shape
    interior = lab == INTERIOR
    tone = np.where(inst > 0, cell_tone[np.maximum(inst, 1).astype(np.intp) - 1], 0.0)
    # Fine grain in the cytoplasm, so that a classifier cannot key on flat intensity.
    grain = ndimage.gaussian_filter(rng.standard_normal(lab.shape), 1.5)
    image = tone + 0.025 * grain / max(grain.std(), 1e-9)
    image[lab == MEMBRANE] = (0.2 + 0.05 * np.tanh(membrane_field))[lab == MEMBRANE]
    image[lab == ECS] = 0.75

    clearance = ndimage.distance_transform_edt(interior)
    occupied = np.zeros(lab.shape, bool)
    my, mx, mzc, mzh, mlen, mwid, mang, mtone = mitos
    for i in np.flatnonzero(np.abs(z - mzc) <= mzh):
        # Tubes thin out towards their ends in z, like sections through a capsule.
        taper = np.sqrt(max(0.0, 1.0 - ((z - mzc[i]) / (mzh[i] + 1.0)) ** 2))
        half_len = max(0.5 * mlen[i] * taper, 0.5 * mwid[i])
        half_wid = 0.5 * mwid[i]
        window, mask = _paint_ellipse(image, (my[i], mx[i]), half_len, half_wid, mang[i])
        if not mask.any():
            continue
        if (clearance[window][mask] < _ORGANELLE_CLEARANCE).any() or occupied[window][mask].any():
            continue
        _, core = _paint_ellipse(
            image,
            (my[i], mx[i]),
            max(half_len - 1.2, 0.5),
            max(half_wid - 1.2, 0.5),
            mang[i],
            reach=int(np.ceil(half_len)) + 1,
        )
        patch = image[window]
        # A darker rim reads as the outer membrane of a mitochondrion.
        patch[mask] = mtone[i] - 0.08
        patch[mask & core] = mtone[i]
        occupied[window] |= mask

    n_vesicles = int(round(area_in_cells * 8.0))
    ves_y = rng.uniform(0.0, height, n_vesicles)
    ves_x = rng.uniform(0.0, width, n_vesicles)
    ves_r = rng.uniform(1.5, 2.5, n_vesicles)
    ves_tone = rng.uniform(0.3, 0.42, n_vesicles)
    for i in range(n_vesicles):
        window, mask = _paint_ellipse(image, (ves_y[i], ves_x[i]), ves_r[i], ves_r[i], 0.0)
        if not mask.any():
            continue
        if (clearance[window][mask] < _ORGANELLE_CLEARANCE).any() or occupied[window][mask].any():
            continue
        image[window][mask] = ves_tone[i]
        occupied[window] |= mask

    image = ndimage.gaussian_filter(image, 1.0)
    image *= 1.0 + 0.13 * np.clip(drift, -1.5, 1.5) / 1.5
    image += rng.normal(0.0, 0.05, image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def write_stack(stack: SyntheticStack, out: Path) -> dict[str, Path]:
    """Write a stack as one file per section and class of data.

    Writes ``out/em/NNN.png`` (uint8), ``out/instances/NNN.tif`` (uint32 TIFF) and
    ``out/labels/NNN.png`` (classes 1/2/3, a palette PNG), where NNN is the section index
    zero-padded to 3 digits (more only for stacks of over 1000 sections). Each file is
    written atomically.

    Returns:
        ``{"em": dir, "instances": dir, "labels": dir}``.
    """
    out = Path(out)
    dirs = {"em": out / "em", "instances": out / "instances", "labels": out / "labels"}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(stack.em.shape[0] - 1)))
    for z in range(stack.em.shape[0]):
        name = f"{z:0{digits}d}"
        write_image(dirs["em"] / f"{name}.png", np.ascontiguousarray(stack.em[z], np.uint8))
        write_image(
            dirs["instances"] / f"{name}.tif",
            np.ascontiguousarray(stack.instances[z], np.uint32),
        )
        write_label_image(dirs["labels"] / f"{name}.png", stack.labels[z])
    return dirs
