"""Tests for the synthetic EM generator (membraind.demo.synthetic_em)."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from membraind.demo.synthetic_em import SyntheticStack, generate_stack, write_stack
from membraind.groundtruth.classes import CLASS_COLOURS
from membraind.volumes.image_files import read_image

SECTIONS = 4
SHAPE = (256, 320)


@pytest.fixture(scope="module")
def stack() -> SyntheticStack:
    return generate_stack(seed=3, sections=SECTIONS, shape=SHAPE)


def _touching_pairs(instances: np.ndarray):
    """For each axis, the two views of 4-neighbour pixel pairs with different nonzero ids."""
    for axis in (0, 1):
        first = [slice(None), slice(None)]
        second = [slice(None), slice(None)]
        first[axis], second[axis] = slice(1, None), slice(None, -1)
        a, b = instances[tuple(first)], instances[tuple(second)]
        yield tuple(first), tuple(second), (a != b) & (a > 0) & (b > 0)


def _local_membrane_widths(instances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Membrane width across each border pixel pair: sum of both pixels' depth in membrane."""
    depth = ndimage.distance_transform_edt(labels == 2)
    widths = [
        (depth[first] + depth[second])[touch]
        for first, second, touch in _touching_pairs(instances)
    ]
    return np.concatenate(widths)


def test_same_seed_gives_identical_stacks() -> None:
    a = generate_stack(seed=11, sections=2, shape=(96, 128))
    b = generate_stack(seed=11, sections=2, shape=(96, 128))
    np.testing.assert_array_equal(a.em, b.em)
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_different_seeds_give_different_stacks() -> None:
    a = generate_stack(seed=11, sections=2, shape=(96, 128))
    b = generate_stack(seed=12, sections=2, shape=(96, 128))
    assert not np.array_equal(a.em, b.em)
    assert not np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.labels, b.labels)


def test_shapes_dtypes_and_label_values(stack: SyntheticStack) -> None:
    for array, dtype in ((stack.em, np.uint8), (stack.instances, np.uint32), (stack.labels, np.uint8)):
        assert array.shape == (SECTIONS, *SHAPE)
        assert array.dtype == dtype
    assert set(np.unique(stack.labels).tolist()) <= {1, 2, 3}
    np.testing.assert_array_equal(stack.instances == 0, stack.labels == 3)
    # Many cells per section, and the em image uses a real range of gray values.
    for z in range(SECTIONS):
        assert np.unique(stack.instances[z]).size > 15
    assert stack.em.std() > 20


def test_membrane_and_ecs_fractions_are_plausible(stack: SyntheticStack) -> None:
    for z in range(SECTIONS):
        membrane = (stack.labels[z] == 2).mean()
        ecs = (stack.labels[z] == 3).mean()
        assert 0.08 <= membrane <= 0.35, (z, membrane)
        assert 0.001 <= ecs <= 0.05, (z, ecs)


def test_ecs_pieces_are_small_and_lined_by_membrane(stack: SyntheticStack) -> None:
    for z in range(SECTIONS):
        ecs = stack.labels[z] == 3
        pieces, count = ndimage.label(ecs)
        assert count > 0
        for window in ndimage.find_objects(pieces):
            extent = max(s.stop - s.start for s in window)
            assert 2 <= extent <= 40
        rim = ndimage.binary_dilation(ecs, structure=np.ones((3, 3), bool)) & ~ecs
        assert np.all(stack.labels[z][rim] == 2)


def test_membranes_are_dark(stack: SyntheticStack) -> None:
    interior = stack.em[stack.labels == 1].astype(float).mean()
    membrane = stack.em[stack.labels == 2].astype(float).mean()
    ecs = stack.em[stack.labels == 3].astype(float).mean()
    assert interior - membrane > 50
    assert ecs > membrane + 50


def test_every_cell_border_lies_on_membrane(stack: SyntheticStack) -> None:
    for z in range(SECTIONS):
        instances, labels = stack.instances[z], stack.labels[z]
        pairs = 0
        for first, second, touch in _touching_pairs(instances):
            pairs += int(touch.sum())
            assert np.all(labels[first][touch] == 2)
            assert np.all(labels[second][touch] == 2)
        assert pairs > 1000


def test_cells_are_coherent_across_sections(stack: SyntheticStack) -> None:
    ious = []
    for z in range(SECTIONS - 1):
        here, there = stack.instances[z], stack.instances[z + 1]
        shared = np.intersect1d(np.unique(here), np.unique(there))
        for cell in shared[shared > 0]:
            a, b = here == cell, there == cell
            ious.append((a & b).sum() / (a | b).sum())
    assert len(ious) > 40
    assert np.median(ious) > 0.7


def test_membrane_width_varies_between_thin_and_thick(stack: SyntheticStack) -> None:
    widths = np.concatenate(
        [_local_membrane_widths(stack.instances[z], stack.labels[z]) for z in range(SECTIONS)]
    )
    low, median, high = np.percentile(widths, [10, 50, 90])
    assert low <= 3.0, low
    assert high >= 5.0, high
    assert 2.0 <= median <= 6.0, median


def _border_bulges(instances: np.ndarray) -> np.ndarray:
    """For each long border between two cells, its largest distance from a straight line."""
    points: dict[tuple[int, int], list[np.ndarray]] = {}
    for axis, (first, second, touch) in enumerate(_touching_pairs(instances)):
        a, b = instances[first][touch], instances[second][touch]
        ys, xs = np.nonzero(touch)
        mids = np.column_stack([ys + 0.5 * (axis == 0), xs + 0.5 * (axis == 1)])
        for pair in np.unique(np.column_stack([np.minimum(a, b), np.maximum(a, b)]), axis=0):
            chosen = (np.minimum(a, b) == pair[0]) & (np.maximum(a, b) == pair[1])
            points.setdefault(tuple(pair), []).append(mids[chosen])
    bulges = []
    for parts in points.values():
        border = np.concatenate(parts)
        if len(border) < 30:
            continue
        border = border - border.mean(axis=0)
        normal = np.linalg.svd(border, full_matrices=False)[2][1]
        bulges.append(np.abs(border @ normal).max())
    return np.array(bulges)


def test_cell_borders_are_curved_not_straight(stack: SyntheticStack) -> None:
    # Straight Voronoi edges stay within ~0.5 px of a line (pixel staircase); these
    # borders bend away from it by more than a pixel on typical borders.
    bulges = np.concatenate([_border_bulges(stack.instances[z]) for z in range(SECTIONS)])
    assert len(bulges) > 40
    assert np.median(bulges) > 1.0, np.median(bulges)
    assert np.percentile(bulges, 90) > 2.0


def test_cells_are_single_pieces_inside_the_image(stack: SyntheticStack) -> None:
    from skimage.measure import label

    for z in range(SECTIONS):
        instances = stack.instances[z].astype(np.int64)
        pieces = label(instances, background=0, connectivity=1)
        owner = np.zeros(pieces.max() + 1, np.int64)
        owner[pieces.ravel()] = instances.ravel()
        edge = np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]]))
        inner = np.setdiff1d(np.arange(1, pieces.max() + 1), edge)
        # A cell cut by the image edge may show up twice; any other cell is one piece.
        ids, counts = np.unique(owner[inner], return_counts=True)
        assert np.all(counts == 1), ids[counts > 1]
        edge_ids = set(owner[edge[edge > 0]].tolist())
        assert not edge_ids & set(ids.tolist())


def test_write_stack_round_trips(tmp_path, stack: SyntheticStack) -> None:
    dirs = write_stack(stack, tmp_path / "demo")
    assert dirs == {
        "em": tmp_path / "demo" / "em",
        "instances": tmp_path / "demo" / "instances",
        "labels": tmp_path / "demo" / "labels",
    }
    assert sorted(p.name for p in dirs["em"].iterdir()) == [f"{z:03d}.png" for z in range(SECTIONS)]
    assert sorted(p.name for p in dirs["instances"].iterdir()) == [
        f"{z:03d}.tif" for z in range(SECTIONS)
    ]
    assert sorted(p.name for p in dirs["labels"].iterdir()) == [
        f"{z:03d}.png" for z in range(SECTIONS)
    ]
    for z in range(SECTIONS):
        em = read_image(dirs["em"] / f"{z:03d}.png")
        instances = read_image(dirs["instances"] / f"{z:03d}.tif")
        labels = read_image(dirs["labels"] / f"{z:03d}.png")
        assert em.dtype == np.uint8 and labels.dtype == np.uint8
        assert instances.dtype == np.uint32
        np.testing.assert_array_equal(em, stack.em[z])
        np.testing.assert_array_equal(instances, stack.instances[z])
        np.testing.assert_array_equal(labels, stack.labels[z])
        with Image.open(dirs["labels"] / f"{z:03d}.png") as img:  # shown in the class colours by viewers
            assert img.mode == "P" and np.array_equal(np.asarray(img.convert("RGB"))[0, 0], CLASS_COLOURS[stack.labels[z][0, 0]])


@pytest.mark.parametrize(
    "kwargs",
    [{"sections": 0}, {"shape": (8, 64)}, {"cell_diameter": 4.0}, {"cell_diameter": 1000.0}],
)
def test_rejects_unusable_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        generate_stack(**kwargs)
