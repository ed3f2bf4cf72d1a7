"""Ground truth painted in VAST, found by membraind itself: the emulator over real TCP, ISBI sections."""

from __future__ import annotations

import numpy as np
import pytest

from membraind.errors import InputError
from membraind.groundtruth.classes import INTERIOR, MEMBRANE, UNANNOTATED
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.painted import VastGroundTruth, read_painted, survey_painted
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image

TIMEOUT = 10.0


@pytest.fixture
def vast(painting_em):
    with VastEmulator(painting_em, voxel_size=(4.0, 4.0, 50.0)) as emulator, VastClient(
        "127.0.0.1", emulator.port, timeout=TIMEOUT
    ) as client:
        yield emulator, client


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    """A brush stroke's dab: the pixels within ``radius`` of ``centre`` (y, x)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def paint(client: VastClient, layer: int, z: int, strokes: dict[int, list[tuple[int, int, int]]]) -> np.ndarray:
    """Paint discs (y, x, radius) of each segment id into section ``z`` (256 x 320) as VAST's brush does."""
    box = Box(x0=0, x1=320, y0=0, y1=256, z0=z, z1=z + 1)
    with client.api_layer(layer):
        ids = client.read_segmentation(box)[0]
        for segment, dabs in strokes.items():
            for y, x, r in dabs:
                ids[disc(ids.shape, (y, x), r)] = segment
        client.write_segmentation(box, ids[None])
    return ids


def named_segments(client: VastClient, layer: int) -> tuple[int, int]:
    return client.add_segment(layer, "membrane"), client.add_segment(layer, "Interior")


def test_the_segment_table_holds_names_tree_and_painted_boxes(vast):
    emulator, client = vast
    seg = client.find_layer("segmentation")
    folder = client.add_segment(seg, "membrane")
    child = client.add_segment(seg, "thick membrane", parent=folder)
    assert client.add_segment(seg, "interior") == 3
    paint(client, seg, 1, {child: [(40, 50, 5)], 9: [(100, 100, 3)]})
    table = client.segments(seg)
    assert table[child].parent == folder and table[folder].child == child and table[folder].next == 3
    assert table[child].box() == Box(x0=45, x1=56, y0=35, y1=46, z0=1, z1=2)
    assert table[folder].box() is None
    assert table[9].name == "Segment 9" and table[5].name == "Segment 5"  # painted before anyone named it
    client.set_segment_name(seg, 9, "interior")
    assert client.segments(seg)[9].name == "interior"


def test_survey_counts_exactly_the_painted_voxels_and_its_fingerprint_follows_the_painting(vast):
    _, client = vast
    seg = client.find_layer("segmentation")
    membrane, interior = named_segments(client, seg)
    source = VastGroundTruth(port=client.port)
    empty = survey_painted(client, source)
    assert empty.voxels == 0 and empty.boxes == []
    a = paint(client, seg, 0, {interior: [(60, 60, 12), (70, 75, 12)], membrane: [(60, 90, 4)]})
    b = paint(client, seg, 2, {membrane: [(200, 250, 6)]})
    first = survey_painted(client, source)
    assert first.voxels == np.count_nonzero(a) + np.count_nonzero(b)
    assert survey_painted(client, source) == first  # the same painting, the same survey
    assert all(box.mip == 0 for box in first.boxes)
    paint(client, seg, 2, {interior: [(200, 265, 2)]})  # more painted next to a stroke
    second = survey_painted(client, source)
    assert second.voxels > first.voxels and second.fingerprint != first.fingerprint


def test_painted_regions_become_training_images_unpainted_is_unannotated(vast, painting_em):
    _, client = vast
    seg = client.find_layer("segmentation")
    membrane, interior = named_segments(client, seg)
    a = paint(client, seg, 0, {interior: [(60, 60, 12)], membrane: [(60, 80, 5)]})
    b = paint(client, seg, 3, {interior: [(150, 200, 8)]})
    images, record = read_painted(client, VastGroundTruth(port=client.port))
    by_z = {int(image.name.split("-z")[1].split("-")[0]): image for image in images}
    assert sorted(by_z) == [0, 3]  # sections 1 and 2 hold no paint
    first = by_z[0]
    x0, y0 = (int(part[1:]) for part in first.name.split("-")[2:4])
    h, w = first.labels.shape
    painted = a[y0 : y0 + h, x0 : x0 + w]
    assert np.array_equal(first.labels == MEMBRANE, painted == membrane)
    assert np.array_equal(first.labels == INTERIOR, painted == interior)
    assert np.array_equal(first.em, read_image(painting_em / "00.png")[y0 : y0 + h, x0 : x0 + w])
    assert (by_z[3].labels != UNANNOTATED).sum() == np.count_nonzero(b)
    assert record.painted_voxels == np.count_nonzero(a) + np.count_nonzero(b)
    assert record.voxels_per_class == {"interior": int((a == interior).sum() + (b == interior).sum()),
                                       "membrane": int((a == membrane).sum())}  # fmt: skip
    assert record.source == f"vast://127.0.0.1:{client.port} layer 'segmentation' (mip 0)" and "T" in record.read_at


def test_a_painted_segment_without_a_class_name_is_named_in_the_error(vast):
    _, client = vast
    seg = client.find_layer("segmentation")
    membrane, _ = named_segments(client, seg)
    paint(client, seg, 1, {membrane: [(50, 50, 4)], 7: [(90, 90, 4)]})
    with pytest.raises(InputError, match=r"painted segment\(s\) 7 'Segment 7' name no class.*Rename.*folder.*instances"):
        read_painted(client, VastGroundTruth(port=client.port))


def test_a_child_of_a_folder_named_membrane_paints_membrane(vast):
    _, client = vast
    seg = client.find_layer("segmentation")
    folder = client.add_segment(seg, "Membrane")
    outer = client.add_segment(seg, "outer leaflet", parent=folder)
    deep = client.add_segment(seg, "mitochondrion edge", parent=outer)
    cell = client.add_segment(seg, "cells")
    inside = client.add_segment(seg, "cell 1", parent=cell)
    paint(client, seg, 2, {deep: [(40, 40, 3)], inside: [(40, 50, 6)]})  # touching: one region
    classes = {"membrane": ["membrane"], "interior": ["cells"]}
    (image,), record = read_painted(client, VastGroundTruth(port=client.port, classes=classes))
    assert set(np.unique(image.labels)) == {UNANNOTATED, INTERIOR, MEMBRANE}
    assert record.voxels_per_class["membrane"] == disc((99, 99), (40, 40), 3).sum()


def test_instances_draw_membranes_only_where_painted_cells_meet(vast):
    _, client = vast
    seg = client.find_layer("segmentation")
    ids = paint(client, seg, 0, {11: [(60, 60, 10)], 12: [(60, 80, 10)]})
    (image,), _ = read_painted(client, VastGroundTruth(port=client.port, convention="instances"))
    assert (image.labels == MEMBRANE).any() and (image.labels == INTERIOR).any()
    x0, y0 = (int(part[1:]) for part in image.name.split("-")[2:4])
    h, w = image.labels.shape
    unpainted = image.labels[ids[y0 : y0 + h, x0 : x0 + w] == 0]
    assert set(np.unique(unpainted)) == {UNANNOTATED, MEMBRANE}  # only the narrow gap where the cells meet is drawn
    # the cells meet at x = 70; their far sides border unpainted voxels: no membrane drawn there
    membrane_x = np.nonzero(image.labels == MEMBRANE)[1] + x0
    assert 64 <= membrane_x.min() and membrane_x.max() <= 76


def test_painting_read_at_mip_1(vast):
    _, client = vast
    seg = client.find_layer("segmentation")
    membrane, interior = named_segments(client, seg)
    paint(client, seg, 1, {interior: [(100, 100, 20)], membrane: [(100, 125, 6)]})
    (image,), record = read_painted(client, VastGroundTruth(port=client.port, mip=1))
    assert image.name.endswith("-mip1") and image.em.shape == image.labels.shape
    assert image.labels.shape[0] <= 25 and set(np.unique(image.labels)) == {UNANNOTATED, INTERIOR, MEMBRANE}
    assert "(mip 1)" in record.source


def test_nothing_painted_says_what_to_paint(vast):
    _, client = vast
    with pytest.raises(InputError, match="nothing is painted.*membrane: a segment named 'membrane'"):
        read_painted(client, VastGroundTruth(port=client.port))
