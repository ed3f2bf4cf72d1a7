"""The VAST client over real TCP against the emulator: every call membraind uses, faults, reconnects.

The emulator serves a volume cut from ISBI sections (500 x 300 pixels, not a multiple of
the tile size or of 2^mip), annotation layers from a skeleton file, and a segmentation
layer.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from membraind.groundtruth.classes import CLASS_COLOURS
from membraind.nn.bundle import load_bundle
from membraind.predict.request import PredictRequest, VastSource
from membraind.predict.run import plan_tiles, run_prediction
from membraind.predict.settings import PredictSettings
from membraind.predict.tiling import TileGrid
from membraind.vast.anchors import AnchorPoller
from membraind.vast.client import VastClient, VastConnectionError
from membraind.vast.editable import renumber_segments, write_unpainted
from membraind.vast.emulator import VastEmulator
from membraind.vast.groundtruth import ground_truth_from_vast
from membraind.vast.layouts import LayerType, SkeletonNode
from membraind.vast.protocol import VastError, VastOutOfBounds, VastProtocolError, VastRefused
from membraind.vast.publish import LayerPublisher
from membraind.vast.skeletons import AnnotationLayerData, SkeletonObject, save_skeleton_json
from membraind.vast.volume import VastVolume
from membraind.volumes.box import Box
from membraind.volumes.gray import as_gray
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.open_volume import open_volume
from membraind.volumes.tile_store import TileStore
from tests.conftest import run_cli

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def em_folder(isbi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vast-em")
    for z in range(3):
        write_image(folder / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{z:02d}.png")[:300, :500])
    return folder


def _skeleton_file(path, nodes_a, nodes_b=((400, 250, 2),)):
    def nodes(points):
        return [SkeletonNode(index=i, x=x, y=y, z=z, parent=i - 1 if i else None) for i, (x, y, z) in enumerate(points)]

    layers = [
        AnnotationLayerData(
            name="anchors",
            objects=[SkeletonObject(id=1, name="axon", nodes=nodes(nodes_a)), SkeletonObject(id=2, name="dendrite", nodes=nodes(nodes_b))],
        )
    ]
    return save_skeleton_json(path, layers)


@pytest.fixture
def emulator(em_folder, tmp_path):
    skeletons = _skeleton_file(tmp_path / "skeletons.json", [(10, 10, 0), (100, 40, 1)])
    emulator = VastEmulator(open_volume(em_folder), skeletons=skeletons, port=0)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emulator):
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT, connect_attempts=2, backoff=0.05) as client:
        yield client


def test_volume_and_layers(client, em_folder):
    info = client.info()
    assert info.size == (500, 300, 3) and info.mips >= 3
    layers = client.layers()
    assert layers[0].bytes_per_pixel == 1
    assert "anchors" in [layer.name for layer in layers]
    assert client.find_layer("anchors") == [layer.name for layer in layers].index("anchors")
    with pytest.raises(Exception, match="no layer named 'nope'.*anchors"):
        client.find_layer("nope")
    assert client.scale_factors(0)[:3] == [(1, 1, 1), (2, 2, 1), (4, 4, 1)]
    assert client.api_version() >= 1


@pytest.mark.parametrize("mip", [0, 1, 2])
def test_em_reads_match_the_files_at_every_mip(client, em_folder, mip):
    files = open_volume(em_folder)
    vast = VastVolume(client, 0)
    _, height, width = vast.shape_at(mip)
    box = Box(x0=3, x1=width - 1, y0=0, y1=height, z0=0, z1=3, mip=mip)
    assert np.array_equal(vast.read(box), files.read(box))


def test_reads_come_in_chunks_aligned_to_vast_cubes(em_folder):
    box = Box(x0=0, x1=50, y0=0, y1=30, z0=0, z1=3, mip=0)
    with VastEmulator(em_folder, port=0, cube_size=(16, 16, 2)) as emulator:
        with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
            sent = []
            call = client.call

            def spy(command, *values, **kwargs):
                sent.append(values[6:8] if command == 30 else None)  # minz, maxz of EM reads
                return call(command, *values, **kwargs)

            client.call = spy
            assert np.array_equal(client.read_em(0, box.model_copy(update={"z0": 1})), open_volume(em_folder).read(
                box.model_copy(update={"z0": 1})))
            assert [s for s in sent if s] == [(1, 1), (2, 2)]  # z 1 ends cube 0-1; z 2 starts cube 2-3


def test_refusal_names_what_vast_refused(client):
    with pytest.raises(VastOutOfBounds, match=r"coordinates out of bounds.*box x 0-599, y 0-9, z 0-0 at mip 0"):
        client.read_em(0, Box(x0=0, x1=600, y0=0, y1=10, z0=0, z1=1, mip=0))
    with pytest.raises(VastRefused, match="mip level out of bounds"):
        client.read_em(0, Box(x0=0, x1=1, y0=0, y1=1, z0=0, z1=1, mip=12))
    assert client.info().size == (500, 300, 3)  # the connection is still fine


def test_segmentation_round_trip_raw_and_rle_and_editable_writes(client):
    seg = next(i for i, layer in enumerate(client.layers()) if layer.type == LayerType.SEGMENTATION)
    box = Box(x0=10, x1=60, y0=20, y1=50, z0=1, z1=3, mip=0)
    painted = np.zeros(box.shape, np.uint16)
    painted[:, :5] = 7  # the user's own strokes
    with client.api_layer(seg):
        assert client.write_segmentation(box, painted) == "rle"
        noisy = np.random.default_rng(0).integers(0, 60000, box.shape).astype(np.uint16)
        assert client.write_segmentation(box, noisy) == "raw"  # RLE would be larger
        assert np.array_equal(client.read_segmentation(box, rle=False), noisy)
        assert np.array_equal(client.read_segmentation(box, rle=True), noisy)  # VAST says 22: read raw instead
        client.write_segmentation(box, painted)
        assert np.array_equal(client.read_segmentation(box, rle=True), painted)
    predicted = renumber_segments(np.arange(np.prod(box.shape)).reshape(box.shape) % 3, first_id=100)
    written = write_unpainted(client, seg, box, predicted)
    with client.api_layer(seg):
        after = client.read_segmentation(box)
    assert np.all(after[:, :5] == 7)  # never painted over the user's segments
    assert written == np.count_nonzero((painted == 0) & (predicted > 0))
    assert set(np.unique(after[:, 5:])) <= {0, 100, 101}


def test_skeletons_and_anchor_polling(client, emulator, tmp_path):
    layer = client.find_layer("anchors")
    skeletons = client.skeletons(layer)
    assert skeletons[1].name == "axon" and [(n.x, n.y, n.z) for n in skeletons[1].nodes] == [(10, 10, 0), (100, 40, 1)]
    assert skeletons[1].nodes[1].parent == 0
    poller = AnchorPoller(client, ["anchors"])
    first = poller.poll()
    assert {(a.x, a.y, a.z) for a in first} == {(10, 10, 0), (100, 40, 1), (400, 250, 2)}
    assert poller.poll() == []  # nothing changed
    # Move one node in the skeleton file the emulator serves: one new anchor, one cube.
    path = tmp_path / "skeletons.json"
    _skeleton_file(path, [(10, 10, 0), (300, 200, 1)])
    _touch_later(path)
    moved = poller.poll()
    assert [(a.x, a.y, a.z) for a in moved] == [(300, 200, 1)]
    # The anchors reach the tiles around them.
    request = PredictRequest(
        volume=VastSource(port=emulator.port), bundles=["unused"], out=tmp_path,
        target={"mode": "anchors", "points": [a.model_dump() for a in moved], "cube_xy": 64, "cube_z": 1},
    )  # fmt: skip
    grid = TileGrid(VastVolume(client, 0), 0, 128)
    keys = plan_tiles(request, grid)
    assert {(k.z, k.row, k.col) for k in keys} == {(1, 1, 2)}  # x 268-331 -> col 2, y 168-231 -> row 1


def _selected_object(port: int, layer: int, select: int | None = None) -> int:
    """What the user has selected in annotation ``layer`` (selecting ``select`` first), seen from their own connection."""
    with VastClient("127.0.0.1", port, timeout=TIMEOUT) as user, user.api_layer(layer):
        if select is not None:
            user.select_anno_object(select)
        return user.selected_anno_object()


def test_polling_leaves_the_users_selected_skeleton_as_it_was(client, emulator):
    layer = client.find_layer("anchors")
    assert _selected_object(emulator.port, layer, select=2) == 2  # the user traces the dendrite
    poller = AnchorPoller(client, ["anchors"])
    assert {(a.x, a.y, a.z) for a in poller.poll()} == {(10, 10, 0), (100, 40, 1), (400, 250, 2)}
    assert _selected_object(emulator.port, layer) == 2
    assert _selected_object(emulator.port, layer, select=1) == 1  # ... then picks the axon between polls
    emulator.vast.object_selections.clear()
    assert poller.poll() == []
    assert _selected_object(emulator.port, layer) == 1
    # Nothing changed: the selected skeleton is read where it is, the other one comes from the last poll.
    assert emulator.vast.object_selections == []


def test_a_deleted_skeleton_does_not_stop_the_poll(em_folder, tmp_path):
    def skeleton(object_id, x):
        return SkeletonObject(id=object_id, name=f"s{object_id}", nodes=[SkeletonNode(index=0, x=x, y=5, z=0)])

    # Objects 2 and 3 were deleted in VAST: their slots stay in the object table, unused.
    path = save_skeleton_json(tmp_path / "s.json", [AnnotationLayerData(name="anchors", objects=[skeleton(1, 7), skeleton(4, 9)])])
    with VastEmulator(open_volume(em_folder), skeletons=path, port=0) as emulator:
        with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
            layer = client.find_layer("anchors")
            with client.api_layer(layer):
                assert [(row.id, row.used) for row in client.anno_objects()] == [(1, True), (2, False), (3, False), (4, True)]
            assert sorted(client.skeletons(layer)) == [1, 4]
            assert {(a.x, a.y) for a in AnchorPoller(client, ["anchors"]).poll()} == {(7, 5), (9, 5)}


def _touch_later(path):
    """Make sure the rewritten file's mtime differs from the one the emulator saw."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def _store_vsvi(folder, name, value=200):
    store = TileStore(folder / name, (3, 300, 500), layer_name=name, tile_size=128)
    store.write_tile(0, 0, 0, 0, np.full((128, 128), value, np.uint8))
    return store.write_vsvi()


def test_load_layer_once_then_refresh(client, emulator, tmp_path):
    membrane, cells = _store_vsvi(tmp_path, "membrane"), _store_vsvi(tmp_path, "cells")
    publisher = LayerPublisher(client, tmp_path / "vast-layers.json")
    assert publisher.publish(membrane) == 1  # as VAST does: right after the selected layer (EM), not at the end
    assert publisher.publish(cells) == 1  # above the first one, which moves down to 2
    region = Box(x0=0, x1=1024, y0=0, y1=1024, z0=0, z1=1, mip=0)
    assert LayerPublisher(client, tmp_path / "vast-layers.json").publish(membrane, region) == 2  # found by name, after a restart too
    assert [call[:2] for call in emulator.calls] == [("LOADLAYER", str(membrane)), ("LOADLAYER", str(cells)),
                                                     ("REFRESHLAYERREGION", 2)]  # fmt: skip
    assert client.layer_info(2).name == "membrane"


def test_add_a_segmentation_layer_of_its_own(client, emulator):
    count = client.layer_count()
    layer = client.add_layer("cells 2D")  # after the selected layer, the EM: layer 1
    assert layer == 1 and client.layer_count() == count + 1
    info = client.layer_info(layer)
    assert (info.name, info.type) == ("cells 2D", LayerType.SEGMENTATION)
    box = Box(x0=10, x1=20, y0=0, y1=5, z0=1, z1=2)
    with client.api_layer(layer):
        assert not client.read_segmentation(box).any()  # empty, of the volume's size
        client.write_segmentation(box, np.full(box.shape, 7, np.uint16))
        assert (client.read_segmentation(box) == 7).all()
    assert (emulator.vast.labels_of("cells 2D").read(1, 2, 0, 5, 10, 20) == 7).all()
    assert not emulator.segmentation.read(1, 2, 0, 5, 10, 20).any()  # the first segmentation layer is untouched
    with pytest.raises(VastRefused, match="invalid layer type"):
        client.add_layer("notes", LayerType.ANNOTATION)
    client.remove_layer(layer)  # an added layer may be closed again
    assert client.layer_count() == count


def test_a_vast_layer_read_by_name_is_followed_when_a_layer_is_loaded_above_it(client, tmp_path):
    client.load_layer(_store_vsvi(tmp_path, "membrane", 200))
    volume = VastVolume(client, "membrane")
    box = Box(x0=0, x1=128, y0=0, y1=128, z0=0, z1=1)
    assert volume.layer == 1 and (volume.read(box) == 200).all()
    client.load_layer(_store_vsvi(tmp_path, "cells", 50))  # after the selected layer (EM): membrane moves down
    assert (volume.read(box) == 200).all() and volume.layer == 2


def test_names_and_paths_with_umlauts_reach_vast_and_come_back(client, tmp_path):
    store = TileStore(tmp_path / "Rücken" / "store", (3, 300, 500), layer_name="Rücken-Gehirn", tile_size=128)
    store.write_tile(0, 0, 0, 0, np.full((128, 128), 200, np.uint8))
    layer = client.load_layer(store.write_vsvi())
    assert client.find_layer("Rücken-Gehirn") == layer
    assert client.layer_info(layer).type == LayerType.IMAGE
    with pytest.raises(VastError, match="cannot send LOADLAYER to VAST: .*'神'.*cp1252"):
        client.load_layer(tmp_path / "神経" / "x.vsvi")


def test_ground_truth_from_a_segmentation_layer(client, em_folder):
    seg = next(i for i, layer in enumerate(client.layers()) if layer.type == LayerType.SEGMENTATION)
    box = Box(x0=0, x1=64, y0=0, y1=64, z0=0, z1=2, mip=0)
    labels = np.zeros(box.shape, np.uint16)
    labels[:, :32] = 1
    labels[:, 32:40] = 2
    with client.api_layer(seg):
        client.write_segmentation(box, labels)
    images = ground_truth_from_vast(client, 0, seg, box)
    assert len(images) == 2 and images[0].em.shape == (64, 64)
    assert np.array_equal(images[1].labels, labels[1])
    assert np.array_equal(images[0].em, open_volume(em_folder).read(box)[0])


@pytest.mark.parametrize("fault", ["close_mid_reply", "wrong_magic", "length_too_large", "stall"])
def test_faults_raise_clear_errors_within_the_timeout_and_the_next_call_reconnects(emulator, fault):
    with VastClient("127.0.0.1", emulator.port, timeout=3.0, connect_attempts=2, backoff=0.05) as client:
        client.info()
        emulator.fault = fault
        started = time.monotonic()
        with pytest.raises((VastConnectionError, VastProtocolError)) as error:
            client.read_em(0, Box(x0=0, x1=100, y0=0, y1=100, z0=0, z1=1, mip=0))
        assert time.monotonic() - started < 20  # the timeout (3 s) plus slack on a busy machine
        assert "GETEMIMAGERAW" in str(error.value)
        assert client.read_em(0, Box(x0=0, x1=10, y0=0, y1=10, z0=0, z1=1, mip=0)).shape == (1, 10, 10)


def test_unreachable_vast_says_how_to_enable_it():
    with pytest.raises(VastConnectionError, match="Remote Control API Server"):
        VastClient("127.0.0.1", 1, timeout=1.0, connect_attempts=2, backoff=0.01).info()


def test_prediction_from_a_live_vast_equals_prediction_from_files(em_folder, trained_bundle, emulator, tmp_path):
    target = {"mode": "box", "box": {"x0": 0, "x1": 300, "y0": 0, "y1": 200, "z0": 0, "z1": 2, "mip": 0}}
    settings = PredictSettings(tile_size=128)
    for name, volume in (("vast", VastSource(port=emulator.port)), ("files", em_folder)):
        run_prediction(PredictRequest(volume=volume, bundles=[trained_bundle], out=tmp_path / name, target=target), settings)
    stores = [next((tmp_path / name).glob("*/membrane/*.vsvi")) for name in ("vast", "files")]
    a, b = (open_volume(p).read(Box(x0=0, x1=300, y0=0, y1=200, z0=0, z1=2, mip=0)) for p in stores)
    assert np.array_equal(a, b) and a.std() > 10


def test_command_line_predicts_around_the_nodes_of_a_vast_annotation_layer(emulator, trained_bundle, tmp_path):
    source = f"vast://127.0.0.1:{emulator.port}/0"
    result = run_cli("predict", source, "--bundle", str(trained_bundle), "--out", str(tmp_path / "out"),
                     "--anchor-layer", "anchors", "--cube-xy", "64", "--cube-z", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Nodes (10, 10, 0), (100, 40, 1), (400, 250, 2) with 1024 px tiles: one tile in each of sections 0-2.
    assert "3 tiles predicted" in result.stdout
    # The result appears in VAST as a layer: loaded once, then only refreshed.
    assert [c[0] for c in emulator.calls] == ["LOADLAYER"] and emulator.calls[0][1].endswith(".vsvi")
    assert "VAST layer" in result.stdout
    again = run_cli("predict", source, "--bundle", str(trained_bundle), "--out", str(tmp_path / "out"),
                    "--anchor-layer", "anchors", "--cube-xy", "64", "--cube-z", "1")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "0 tiles predicted, 3 already up to date" in again.stdout
    assert [c[0] for c in emulator.calls] == ["LOADLAYER", "REFRESHLAYERREGION"]
    assert emulator.calls[1][2:] == (0, 431, 0, 281, 0, 2)  # the anchors' cubes from 0, inclusive, mip 0
    bad = run_cli("predict", source, "--bundle", str(trained_bundle), "--out", str(tmp_path / "out"),
                  "--anchor-layer", "nope")  # fmt: skip
    assert bad.returncode == 2 and "no layer named 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_predictions_into_two_folders_become_two_layers_named_after_folder_model_and_version(
    emulator, trained_bundle, tmp_path
):
    source = f"vast://127.0.0.1:{emulator.port}/0"
    box = ("--box", "0,100,0,100,0,1")
    for out in ("first", "second", "first"):  # the last one only refreshes the first folder's layer
        result = run_cli("predict", source, "--bundle", str(trained_bundle), "--out", str(tmp_path / out), *box)
        assert result.returncode == 0, result.stderr
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        names = [layer.name for layer in client.layers()][1:3]  # each loaded right after the selected layer, EM
    created = load_bundle(trained_bundle).metadata.created[:10]
    assert names == [f"second: isbi-small membrane (trained {created})", f"first: isbi-small membrane (trained {created})"]
    assert [c[0] for c in emulator.calls] == ["LOADLAYER", "LOADLAYER", "REFRESHLAYERREGION"]
    # The store's file keeps its name, so a store predicted by an earlier membraind still holds one .vsvi.
    assert [p.name for p in (tmp_path / "first" / "isbi-small" / "membrane").glob("*.vsvi")] == ["isbi-small membrane.vsvi"]


def test_colour_layer_arrives_as_rgb_and_reads_as_gray_when_channels_agree(em_folder, tmp_path):
    rgb_folder = tmp_path / "rgb"
    gray = open_volume(em_folder).read(Box(x0=0, x1=500, y0=0, y1=300, z0=0, z1=1, mip=0))[0]
    write_image(rgb_folder / "00.png", np.stack([gray, gray, gray], axis=-1))
    with VastEmulator(rgb_folder, port=0) as emulator, VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        volume = VastVolume(client, 0)
        assert volume.channels == 3 and client.layer_info(0).bytes_per_pixel == 3
        box = Box(x0=5, x1=105, y0=7, y1=57, z0=0, z1=1, mip=1)
        assert volume.read(box).shape == (1, 50, 100, 3)
        assert np.array_equal(as_gray(volume).read(box), open_volume(rgb_folder).read(box)[..., 0])


def test_predict_then_paint_cells_around_skeleton_nodes_from_the_command_line(emulator, trained_bundle, tmp_path):
    """The editable-prediction loop: predict around nodes, paint cells into VAST, keep the user's strokes."""
    vast = f"vast://127.0.0.1:{emulator.port}"
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        seg = client.find_layer("segmentation")
        user = Box(x0=90, x1=110, y0=30, y1=50, z0=1, z1=2, mip=0)  # a stroke near node (100, 40, 1)
        with client.api_layer(seg):
            client.write_segmentation(user, np.full(user.shape, 9, np.uint16))
    predicted = run_cli("predict", f"{vast}/0", "--bundle", str(trained_bundle), "--out", str(tmp_path / "out"),
                        "--anchor-layer", "anchors", "--cube-xy", "64", "--cube-z", "1")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    (store,) = (tmp_path / "out").glob("*/membrane")
    painted = run_cli("vast-paint", vast, "--membrane", str(store), "--segmentation-layer", "segmentation",
                      "--anchor-layer", "anchors", "--cube-xy", "64", "--cube-z", "1")  # fmt: skip
    assert painted.returncode == 0, painted.stderr
    assert "in 3 cubes" in painted.stdout
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client, client.api_layer(seg):
        whole = client.read_segmentation(Box(x0=0, x1=500, y0=0, y1=300, z0=0, z1=3, mip=0))
    assert np.all(whole[1, 30:50, 90:110] == 9)  # the user's stroke is untouched
    cube = whole[1, 8:72, 68:132]  # the cube around (100, 40, 1), clipped at y 0
    assert np.count_nonzero((cube > 0) & (cube != 9)) > 1000 and len(np.unique(cube)) > 3  # several cells
    outside = whole.copy()
    for x, y, z in ((10, 10, 0), (100, 40, 1), (400, 250, 2)):
        outside[z, max(0, y - 32) : y + 32, max(0, x - 32) : x + 32] = 0
    assert not outside.any()  # nothing painted outside the cubes


def test_ground_truth_painted_in_vast_becomes_a_training_run(isbi, emulator, tmp_path):
    """Paint ISBI's expert classes into the VAST layer, export them, train one tiny epoch on them."""
    from tests.nn.test_training import TINY

    box = Box(x0=0, x1=256, y0=0, y1=256, z0=0, z1=2, mip=0)
    truth = np.stack([read_image(isbi / "train" / "label" / f"{z:02d}.png")[:256, :256] for z in range(2)])
    classes = np.where(truth < 128, 2, 1).astype(np.uint16)  # 2 membrane, 1 interior
    classes[:, 200:] = 0  # a region not painted: unannotated
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        with client.api_layer(client.find_layer("segmentation")):
            client.write_segmentation(box, classes)
    vast = f"vast://127.0.0.1:{emulator.port}"
    exported = run_cli("vast-ground-truth", vast, "--segmentation-layer", "segmentation", "--box", "0,256,0,256,0,2",
                       "--out", str(tmp_path / "gt"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "2 sections (78% of pixels annotated)" in exported.stdout
    labels = sorted((tmp_path / "gt" / "labels").glob("*.png"))
    assert len(labels) == 2 and np.array_equal(read_image(labels[1]), classes[1])
    with Image.open(labels[1]) as img:  # a palette PNG: viewers show the class colours
        assert img.mode == "P" and np.array_equal(np.asarray(img.convert("RGB"))[0, 0], CLASS_COLOURS[int(classes[1, 0, 0])])
    trained = run_cli("train", "--em", str(tmp_path / "gt" / "em"), "--labels", str(tmp_path / "gt" / "labels"),
                      "--mapping", "classes", "--out", str(tmp_path / "run"), "--epochs", "1", env=TINY)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    bad = run_cli("vast-ground-truth", vast, "--segmentation-layer", "segmentation", "--box", "0,900,0,10,0,1",
                  "--out", str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 2 and "lies outside VAST layer 0" in bad.stderr and "Traceback" not in bad.stderr


def test_cells_painted_in_vast_are_read_back_with_the_instances_convention_the_error_names(isbi, emulator, tmp_path):
    """Issue 22 item 8: reading painted cells as classes advised --mapping, which vast-ground-truth does not have."""
    from scipy import ndimage

    box = Box(x0=0, x1=256, y0=0, y1=256, z0=0, z1=1, mip=0)
    truth = read_image(isbi / "train" / "label" / "00.png")[:256, :256]
    cells, count = ndimage.label(truth == 255)  # one segment per cell, as vast-paint --mode cells paints
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        with client.api_layer(client.find_layer("segmentation")):
            client.write_segmentation(box, np.where(cells > 0, cells + 1, 0).astype(np.uint16)[None])  # ids from 2
    vast = f"vast://127.0.0.1:{emulator.port}"
    command = ["vast-ground-truth", vast, "--segmentation-layer", "segmentation", "--box", "0,256,0,256,0,1"]
    refused = run_cli(*command, "--out", str(tmp_path / "classes"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    message = refused.stderr.strip()
    assert message.startswith("membraind: error: VAST layer") and "holds values outside the label mapping (4, 5, 6" in message
    assert "read the layer with --convention instances" in message
    assert "--mapping" not in message  # vast-ground-truth has no such option
    assert not (tmp_path / "classes").exists()
    read = run_cli(*command, "--convention", "instances", "--out", str(tmp_path / "instances"))
    assert read.returncode == 0, read.stderr
    (labels,) = (tmp_path / "instances" / "labels").glob("*.png")
    classes = read_image(labels)
    membrane = np.count_nonzero(classes == 2) / np.count_nonzero(classes)
    assert count > 20 and 0.1 < membrane < 0.5  # many cells, membrane drawn where they meet


def test_view_position_and_calls_from_several_threads_are_serialised(client, em_folder):
    client.set_view_position(250, 150, 2)
    assert client.view_position() == (250, 150, 2)
    files = open_volume(em_folder)
    boxes = [Box(x0=i * 40, x1=i * 40 + 60, y0=i * 20, y1=i * 20 + 50, z0=i % 3, z1=i % 3 + 1, mip=0) for i in range(8)]
    results: dict[int, np.ndarray] = {}

    def read(i: int) -> None:
        for _ in range(5):  # interleave many requests on the one connection
            results[i] = client.read_em(0, boxes[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(boxes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(np.array_equal(results[i], files.read(box)) for i, box in enumerate(boxes))


def _mip2_copy_of_the_em(em_folder, root, tile_size=64):
    """A store framed as a prediction made at mip 2 by a network that returns its input:
    its pixels are the EM's at mip 2, so where they land in VAST shows the framing."""
    em = open_volume(em_folder)
    store = TileStore(root, em.shape_at(2), em.voxel_size, layer_name="EM at mip 2", tile_size=tile_size, base_mip=2,
                      full_shape=em.shape)  # fmt: skip
    store.write_region(store.bounds(0), em.read(em.bounds(2)))
    store.build_pyramid()
    return store


def test_a_store_made_at_mip_2_lines_up_with_the_em_in_vast(client, emulator, em_folder, tmp_path):
    store = _mip2_copy_of_the_em(em_folder, tmp_path / "store")
    vsvi = store.write_vsvi()
    assert (tmp_path / "store" / "mip2").is_dir() and not (tmp_path / "store" / "mip0").exists()
    descriptor = open_volume(vsvi).descriptor
    # The layer is described at mip 0, as VAST wants it: the EM's size and voxel size, tiles from mip 2 up.
    assert (descriptor.TargetDataSizeX, descriptor.TargetDataSizeY, descriptor.TargetDataSizeZ) == client.info().size
    assert (descriptor.TargetVoxelSizeXnm, descriptor.TargetVoxelSizeZnm) == client.info().voxel_size[::2]
    assert (descriptor.SourceMinM, descriptor.OffsetMip) == (2, 0)
    publisher = LayerPublisher(client, tmp_path / "vast-layers.json")
    layer = publisher.publish(vsvi)
    vast = VastVolume(client, layer)
    for mip in (2, 3):  # pixel by pixel where VAST shows them
        box = vast.bounds(mip)
        assert np.array_equal(client.read_em(layer, box), client.read_em(0, box)), f"mip {mip}"
    assert not client.read_em(layer, vast.bounds(0).section(0)).any()  # below mip 2: missing, black
    # A refresh after re-predicting a mip-2 box asks VAST for that region in mip-0 voxels.
    publisher.publish(vsvi, Box(x0=16, x1=32, y0=8, y1=24, z0=1, z1=2, mip=2))
    assert emulator.calls[-1] == ("REFRESHLAYERREGION", layer, 64, 127, 32, 95, 1, 1)


def test_vast_paint_puts_a_mip_2_layers_cells_where_they_belong(client, em_folder, tmp_path):
    from membraind.vast.paint import paint_around_anchors

    em = open_volume(em_folder)
    store = TileStore(tmp_path / "membrane", em.shape_at(2), em.voxel_size, tile_size=64, base_mip=2, full_shape=em.shape)
    band = np.zeros(store.shape, np.uint8)
    band[:, 10:13, :] = 255  # a membrane across mip-2 rows 10-12: mip-0 rows 40-51
    store.write_region(store.bounds(0), band)
    membrane = open_volume(store.write_vsvi())
    assert membrane.first_mip == 2
    seg = next(i for i, layer in enumerate(client.layers()) if layer.type == LayerType.SEGMENTATION)
    cube = Box(x0=0, x1=200, y0=0, y1=100, z0=1, z1=2, mip=0)
    report = paint_around_anchors(client, seg, membrane, [cube], mode="membrane", first_id=2)
    assert report.voxels == 200 * 12
    with client.api_layer(seg):
        painted = client.read_segmentation(cube)[0]
    assert set(np.unique(painted[40:52])) == {2} and not painted[:40].any() and not painted[52:].any()


def test_sparse_cells_painted_in_vast_teach_no_membrane_around_them(isbi, emulator):
    """Issue 18: brush strokes inside a few cells, the rest unpainted; the instances convention drew a
    membrane band around every stroke, teaching membranes that are not there."""
    from scipy import ndimage

    box = Box(x0=0, x1=256, y0=0, y1=256, z0=1, z1=2, mip=0)
    truth = read_image(isbi / "train" / "label" / "01.png")[:256, :256]
    cells, count = ndimage.label(truth == 255)
    strokes = np.where(ndimage.binary_erosion(cells > 0, iterations=8), cells + 1, 0)  # inside cells only
    strokes[:, 128:] = 0  # and only in the left half
    with VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        seg = client.find_layer("segmentation")
        with client.api_layer(seg):
            client.write_segmentation(box, strokes.astype(np.uint16)[None])
        (image,) = ground_truth_from_vast(client, "EM", seg, box, convention="instances")
    painted = strokes > 0
    assert np.count_nonzero(painted) > 2000
    assert not np.any(image.labels == 2), "membrane drawn where nobody painted one"
    assert np.all(image.labels[~painted] == 0)  # unpainted stays unannotated
    assert np.count_nonzero(image.labels == 1) > 0.5 * np.count_nonzero(painted)  # the strokes are interior
