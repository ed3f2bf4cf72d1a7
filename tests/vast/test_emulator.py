"""The VAST emulator over real TCP, driven by a minimal raw client built from protocol.py."""

from __future__ import annotations

import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from membraind.errors import InputError
from membraind.vast.emulator import FAULTS, VastEmulator
from membraind.vast.layouts import (
    LayerInfo,
    SelectedLayers,
    VolumeInfo,
    decode_names,
    decode_node_table,
    decode_object_table,
    decode_rle,
    decode_scale_factors,
    encode_rle,
    raw_pixels,
)
from membraind.vast.protocol import (
    BULK_COMMANDS,
    HEADER,
    MAGIC,
    Command,
    Tag,
    VastProtocolError,
    decode_values,
    encode_frame,
    encode_values,
    read_frame,
)
from membraind.vast.skeletons import (
    AnnotationLayerData,
    SkeletonObject,
    load_skeleton_file,
    save_skeleton_json,
)
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.tile_store import TileStore
from membraind.volumes.volume import SectionStackVolume
from tests.conftest import run_cli

TIMEOUT = 10.0
WIDTH, HEIGHT = 501, 299  # odd: not a multiple of 1024 nor of 2**mip


class Refused(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"error code {code}")
        self.code = code


class RawClient:
    """Just enough of a VAST client: one request, one reply, values or raw bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

    def send(self, command: int, *values) -> None:
        self.sock.sendall(encode_frame(int(command), encode_values(*values)))

    def reply(self, command: int):
        result, payload = read_frame(self.sock, signed=True)
        if result != 1:
            raise Refused(decode_values(payload).uints[0])
        return payload if int(command) in BULK_COMMANDS else decode_values(payload)

    def call(self, command: int, *values):
        self.send(command, *values)
        return self.reply(command)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def inclusive(box: Box) -> tuple[int, ...]:
    return (box.x0, box.x1 - 1, box.y0, box.y1 - 1, box.z0, box.z1 - 1)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gray_dir(isbi, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gray")
    for z in range(3):
        image = read_image(isbi / "train" / "image" / f"{z:02d}.png")
        write_image(folder / f"{z:02d}.png", image[7 : 7 + HEIGHT, 3 : 3 + WIDTH])
    return folder


@pytest.fixture(scope="module")
def rgb_dir(isbi, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rgb")
    for z in range(2):
        gray = read_image(isbi / "train" / "image" / f"{z:02d}.png")[:40, :60]
        write_image(folder / f"{z:02d}.png", np.stack([gray, 255 - gray, gray // 2], axis=-1))
    return folder


def skeleton_layers() -> list[AnnotationLayerData]:
    return [
        AnnotationLayerData.model_validate(
            {
                "name": "traces",
                "objects": [
                    {"id": 1, "name": "axon", "nodes": [
                        {"x": 10, "y": 20, "z": 0, "parent": None},
                        {"x": 30, "y": 40, "z": 1, "parent": 0},
                        {"x": 50, "y": 45, "z": 2, "parent": 1},
                        {"x": 25, "y": 60, "z": 2, "parent": 1},
                    ]},
                    {"id": 3, "name": "dendrite", "nodes": [{"x": 400, "y": 200, "z": 1, "parent": None}]},
                ],
            }
        ),
        AnnotationLayerData(name="empty"),
    ]  # fmt: skip


@pytest.fixture
def skeleton_json(tmp_path) -> Path:
    return save_skeleton_json(tmp_path / "skeletons.json", skeleton_layers())


@pytest.fixture
def emulator(gray_dir, skeleton_json):
    with VastEmulator(gray_dir, skeletons=skeleton_json, voxel_size=(4.0, 4.0, 30.0), idle_timeout=30) as emu:
        yield emu
    assert emu.connections == 0


@pytest.fixture
def client(emulator):
    with RawClient(emulator.port) as c:
        yield c


# ---------------------------------------------------------------------- volume, layers


def test_getinfo_layers_and_layer_info(client, gray_dir):
    info = VolumeInfo.from_values(client.call(Command.GETINFO))
    assert info.size == (WIDTH, HEIGHT, 3)
    assert info.voxel_size == (4.0, 4.0, 30.0)
    assert info.mips == 8  # 501 >> 7 = 3 pixels: every mip of the section stack keeps a pixel
    assert client.call(Command.GETNROFLAYERS).uints == [4]
    layers = [LayerInfo.from_values(client.call(Command.GETLAYERINFO, n)) for n in range(4)]
    assert [(la.type, la.name, la.bytes_per_pixel) for la in layers] == [
        (0, "EM", 1), (1, "traces", 0), (1, "empty", 0), (2, "segmentation", 2)]  # VAST's ADDNEWLAYER numbers
    assert client.call(Command.GETAPIVERSION).uints == [5]
    factors = decode_scale_factors(client.call(Command.GETMIPMAPSCALEFACTORS, 0))
    assert factors[:3] == [(1, 1, 1), (2, 2, 1), (4, 4, 1)] and len(factors) == 8


def test_view_coordinates(client):
    assert client.call(Command.GETVIEWCOORDINATES).ints == [WIDTH // 2, HEIGHT // 2, 1]
    client.call(Command.SETVIEWCOORDINATES, 5, 6, 2)
    assert client.call(Command.GETVIEWCOORDINATES).ints == [5, 6, 2]
    assert VolumeInfo.from_values(client.call(Command.GETINFO)).view == (5, 6, 2)
    with pytest.raises(Refused) as err:
        client.call(Command.SETVIEWCOORDINATES, WIDTH, 0, 0)
    assert err.value.code == 10


@pytest.mark.parametrize("mip", [0, 1, 2])
def test_em_reads_match_the_volume_at_each_mip(client, gray_dir, mip):
    volume = SectionStackVolume(gray_dir)
    width, height = WIDTH >> mip, HEIGHT >> mip  # VAST's floor rule
    for box in [
        Box(x0=0, x1=width, y0=0, y1=height, z0=0, z1=3, mip=mip),  # whole volume
        Box(x0=width - 7, x1=width, y0=height - 5, y1=height, z0=1, z1=3, mip=mip),  # last pixels
        Box(x0=3, x1=4, y0=2, y1=3, z0=2, z1=3, mip=mip),  # one voxel
    ]:
        raw = client.call(Command.GETEMIMAGERAW, 0, mip, *inclusive(box))
        assert len(raw) == box.voxels
        np.testing.assert_array_equal(raw_pixels(raw, box.shape, "test"), volume.read(box))
    with pytest.raises(Refused) as err:  # one past the floor-sized edge
        client.call(Command.GETEMIMAGERAW, 0, mip, 0, width, 0, 0, 0, 0)
    assert err.value.code == 10


def test_rgb_volume_is_sent_as_bgr(rgb_dir):
    volume = SectionStackVolume(rgb_dir)
    with VastEmulator(volume) as emu, RawClient(emu.port) as c:
        info = LayerInfo.from_values(c.call(Command.GETLAYERINFO, 0))
        assert info.bytes_per_pixel == 3
        box = Box(x0=5, x1=25, y0=3, y1=13, z0=0, z1=2)
        raw = c.call(Command.GETEMIMAGERAW, 0, 0, *inclusive(box))
        expected = volume.read(box)
        bgr = np.frombuffer(raw, np.uint8).reshape(*box.shape, 3)
        np.testing.assert_array_equal(bgr, expected[..., ::-1])
        np.testing.assert_array_equal(raw_pixels(raw, box.shape, "test"), expected)


# ---------------------------------------------------------------------- segmentation


def test_segmentation_write_raw_and_rle_read_back_both_ways(client):
    rng = np.random.default_rng(7)
    a = Box(x0=250, x1=290, y0=100, y1=130, z0=0, z1=2)  # crosses a storage block edge
    labels_a = rng.integers(0, 65536, a.shape, dtype=np.uint16)
    client.call(Command.SETSEGIMAGERAW, 0, *inclusive(a), labels_a.astype("<u2").tobytes())
    b = Box(x0=0, x1=WIDTH, y0=0, y1=10, z0=2, z1=3)
    labels_b = np.zeros(b.shape, np.uint16)
    labels_b[..., 100:] = 7
    client.call(Command.SETSEGIMAGERLE, 0, *inclusive(b), encode_rle(labels_b))

    whole = Box(x0=0, x1=WIDTH, y0=0, y1=HEIGHT, z0=0, z1=3)
    expected = np.zeros(whole.shape, np.uint16)
    expected[a.slices()] = labels_a
    expected[b.slices()] = labels_b
    raw = client.call(Command.GETSEGIMAGERAW, 0, *inclusive(whole))
    np.testing.assert_array_equal(np.frombuffer(raw, "<u2").reshape(whole.shape), expected)
    rle = client.call(Command.GETSEGIMAGERLE, 0, *inclusive(b))
    np.testing.assert_array_equal(decode_rle(rle, b.shape), labels_b)
    with pytest.raises(Refused, match="error code 22"):  # noise: RLE would be larger, "request raw instead"
        client.call(Command.GETSEGIMAGERLE, 0, *inclusive(a))
    # Mip 1: every other mip-0 voxel.
    half = Box(x0=0, x1=WIDTH >> 1, y0=0, y1=HEIGHT >> 1, z0=0, z1=3, mip=1)
    rle = client.call(Command.GETSEGIMAGERLE, 1, *inclusive(half))
    np.testing.assert_array_equal(decode_rle(rle, half.shape), expected[:, 0 : 2 * half.y1 : 2, 0 : 2 * half.x1 : 2])


def test_segmentation_write_at_mip_fills_blocks_and_checks_sizes(client):
    box = Box(x0=1, x1=3, y0=1, y1=2, z0=0, z1=1, mip=2)
    client.call(Command.SETSEGIMAGERAW, 2, *inclusive(box), np.array([[[5, 6]]], "<u2").tobytes())
    raw = client.call(Command.GETSEGIMAGERAW, 0, 4, 11, 4, 7, 0, 0)
    got = np.frombuffer(raw, "<u2").reshape(4, 8)
    assert (got[:, :4] == 5).all() and (got[:, 4:] == 6).all()
    with pytest.raises(Refused) as err:  # 3 bytes for 2 voxels
        client.call(Command.SETSEGIMAGERAW, 0, 0, 1, 0, 0, 0, 0, b"\x01\x00\x02")
    assert err.value.code == 13
    with pytest.raises(Refused) as err:  # RLE expanding to 3 voxels for 2
        client.call(Command.SETSEGIMAGERLE, 0, 0, 1, 0, 0, 0, 0, np.array([1, 3], "<u2").tobytes())
    assert err.value.code == 13


# ---------------------------------------------------------------------- annotation


def read_skeletons(c: RawClient, layer: int) -> dict[int, tuple[str, list[tuple[int, int, int, int | None]]]]:
    c.call(Command.SETAPILAYERSENABLED, 1)
    c.call(Command.SETSELECTEDAPILAYERNR, (Tag.INT32, layer))
    count, first = c.call(Command.GETANNOLAYERNROFOBJECTS).uints
    objects = decode_object_table(c.call(Command.GETANNOLAYEROBJECTDATA))
    names = decode_names(c.call(Command.GETANNOLAYEROBJECTNAMES))
    assert len(objects) == len(names) == count and first == (1 if count else 0)
    out = {}
    for obj in objects:
        if obj.type != 1 or not obj.used:
            continue
        c.call(Command.SETSELECTEDANNOOBJECTNR, obj.id)
        assert c.call(Command.GETSELECTEDANNOOBJECTNR).uints == [obj.id]
        nodes = decode_node_table(c.call(Command.GETAONODEDATA))
        out[obj.id] = (names[obj.id - 1], [(n.x, n.y, n.z, n.parent) for n in nodes])
    return out


def test_annotation_tables_from_a_json_file(client):
    assert read_skeletons(client, 1) == {
        1: ("axon", [(10, 20, 0, None), (30, 40, 1, 0), (50, 45, 2, 1), (25, 60, 2, 1)]),
        3: ("dendrite", [(400, 200, 1, None)]),
    }
    table = decode_object_table(client.call(Command.GETANNOLAYEROBJECTDATA))
    assert [(o.id, o.type, o.used) for o in table] == [(1, 1, True), (2, 1, False), (3, 1, True)]  # 2: deleted
    assert table[0].anchor == (10, 20, 0) and table[0].bbox == (10, 20, 0, 50, 60, 2)
    raw = client.call(Command.GETAONODEDATA)  # object 3 still selected
    assert len(raw) == 4 + 48
    assert read_skeletons(client, 2) == {}
    assert client.call(Command.GETSELECTEDAPILAYERNR).ints == [2, 0, 2, 3, -1]


def test_annotation_errors(client):
    client.call(Command.SETAPILAYERSENABLED, 1)
    client.call(Command.SETSELECTEDAPILAYERNR, (Tag.INT32, 1))
    with pytest.raises(Refused) as err:  # nothing selected yet
        client.call(Command.GETAONODEDATA)
    assert err.value.code == 20
    for deleted_or_missing in (2, 4):
        with pytest.raises(Refused) as err:
            client.call(Command.SETSELECTEDANNOOBJECTNR, deleted_or_missing)
        assert err.value.code == 20
    with pytest.raises(Refused) as err:
        client.call(Command.SETSELECTEDAPILAYERNR, (Tag.INT32, 9))
    assert err.value.code == 30


def test_no_annotation_layer_is_error_21(gray_dir):
    with VastEmulator(gray_dir) as emu, RawClient(emu.port) as c:
        with pytest.raises(Refused) as err:
            c.call(Command.GETANNOLAYEROBJECTDATA)
        assert err.value.code == 21


def test_moved_node_is_seen_after_the_file_changes(emulator, client, skeleton_json):
    before = read_skeletons(client, 1)
    layers = load_skeleton_file(skeleton_json)
    axon = layers[0].objects[0]
    nodes = list(axon.nodes)
    nodes[2] = nodes[2].model_copy(update={"x": 77, "y": 88})
    layers[0].objects[0] = axon.model_copy(update={"nodes": nodes})
    layers[0].objects.append(SkeletonObject(id=2, name="new", nodes=[{"x": 1, "y": 2, "z": 0}]))
    save_skeleton_json(skeleton_json, layers)
    after = read_skeletons(client, 1)
    assert after[1][1][2] == (77, 88, 2, 1) and after[3] == before[3]
    assert after[2] == ("new", [(1, 2, 0, None)])
    # A broken file keeps the last good skeletons being served.
    skeleton_json.write_text("{not json")
    assert read_skeletons(client, 1) == after


CSV = """\
5,0,0,100,110,0,-1,1,-1,0,0,0,0,0,0,0,""
5,1,0,101,111,1,0,2,3,0,0,0,0,0,0,0,"branch, here"
5,2,0,102,112,2,1,-1,-1,0,0,0,0,0,0,0,""
5,3,0,90,100,2,1,-1,-1,0,0,0,0,0,0,0,"tip"
2,0,0,7,8,1,-1,-1,-1,0,0,0,0,0,0,0,""
"""


def test_annotation_tables_from_a_vast_csv(gray_dir, tmp_path):
    path = tmp_path / "tracing.csv"
    path.write_text(CSV)
    with VastEmulator(gray_dir, skeletons=path) as emu, RawClient(emu.port) as c:
        assert LayerInfo.from_values(c.call(Command.GETLAYERINFO, 1)).name == "tracing"
        assert read_skeletons(c, 1) == {
            2: ("skeleton 2", [(7, 8, 1, None)]),
            5: ("skeleton 5", [(100, 110, 0, None), (101, 111, 1, 0), (102, 112, 2, 1), (90, 100, 2, 1)]),
        }


def test_csv_nodes_out_of_depth_first_order_are_renumbered(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2,0,3,3,3,0\n1,0,0,1,1,1,-1\n1,1,0,2,2,2,2\n")  # 0 <- 2 <- 1
    (layer,) = load_skeleton_file(path)
    assert [(n.x, n.parent) for n in layer.objects[0].nodes] == [(1, None), (3, 0), (2, 1)]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("a.csv", "1,0,0,1,2\n", "line 1: 5 columns"),
        ("b.csv", "1,0,0,1,2,x,-1\n", "line 1: the first 7 columns must be numbers"),
        ("c.csv", "0,0,0,1,2,3,-1\n", "line 1: tree id 0"),
        ("c2.csv", "1,0,0,inf,2,3,-1\n", "line 1: the first 7 columns must be numbers"),
        ("d.csv", "1,0,0,1,2,3,-1\n1,0,0,1,2,3,-1\n", "line 2: tree 1 already has a node 0 (line 1)"),
        ("e.csv", "1,0,0,1,2,3,-1\n1,1,0,1,2,3,-1\n", "tree 1 has 2 root nodes"),
        ("f.csv", "1,0,0,1,2,3,-1\n1,1,0,1,2,3,9\n", "line 2: parent 9 is not a node of tree 1"),
        ("g.csv", "1,0,0,1,2,3,-1\n1,1,0,1,2,3,2\n1,2,0,1,2,3,1\n", "not connected to its root"),
        ("h.json", "{", "is not valid JSON"),
        ("i.json", '{"layers": [{"name": "a", "objects": [{"id": 0}]}]}', "layers.0.objects.0.id"),
        ("j.json", '{"layers": [{"name": "a", "objects": [{"id": 1, "nodes": [{"x": 1, "y": 1, "z": 1, '
                   '"parent": 3}]}]}]}', "node 0 must be the root"),  # fmt: skip
        ("k.json", '{"layers": [{"name": "a", "objects": [{"id": 1, "nodes": [{"x": 1, "y": 1, "z": 1}, '
                   '{"x": 1, "y": 1, "z": 1, "parent": 1}]}]}]}', "node 1 has parent 1"),  # fmt: skip
        ("l.json", '{"layers": [{"name": "a", "objects": [{"id": 1}, {"id": 1}]}]}', "object ids [1] occur"),
        ("m.json", '{"layers": [{"name": "a", "objects": [{"id": 1, "nodes": [{"x": -1, "y": 1, "z": 1}]}]}]}',
         "negative coordinate"),  # fmt: skip
        ("n.json", '{"layer": []}', "layers: Field required"),
    ],
)
def test_bad_skeleton_files_name_file_place_and_fix(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_skeleton_file(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_or_binary_skeleton_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read skeleton file"):
        load_skeleton_file(tmp_path / "nope.json")
    (tmp_path / "layer.vsanno").write_bytes(b"VSA0\xff\xfe\x00")
    with pytest.raises(InputError, match="export the skeletons from VAST as CSV"):
        load_skeleton_file(tmp_path / "layer.vsanno")


# ---------------------------------------------------------------------- layers: load and refresh


def test_loadlayer_and_refresh_are_recorded(emulator, client, gray_dir, tmp_path):
    new = client.call(Command.LOADLAYER, (Tag.INT32, -1), str(gray_dir)).uints
    assert new == [1]  # right after the selected layer, the EM layer
    assert client.call(Command.GETNROFLAYERS).uints == [5]
    info = LayerInfo.from_values(client.call(Command.GETLAYERINFO, 1))
    assert (info.type, info.name, info.bytes_per_pixel) == (0, gray_dir.name, 1)
    box = Box(x0=10, x1=20, y0=10, y1=15, z0=0, z1=2, mip=1)
    np.testing.assert_array_equal(
        raw_pixels(client.call(Command.GETEMIMAGERAW, 1, 1, *inclusive(box)), box.shape, "test"),
        SectionStackVolume(gray_dir).read(box),
    )
    client.call(Command.REFRESHLAYERREGION, 1, 0, 99, 0, 49, 0, 2)
    client.call(Command.REFRESHLAYERREGION, 1, 0, 1023, 0, 1023, 0, 0)  # whole tiles past the edge: fine
    with pytest.raises(Refused) as err:
        client.call(Command.REFRESHLAYERREGION, 1, 5, 4, 0, 1, 0, 0)
    assert err.value.code == 10
    (tmp_path / "broken.vsvi").write_text("{}")
    with pytest.raises(Refused) as err:
        client.call(Command.LOADLAYER, (Tag.INT32, -1), str(tmp_path / "broken.vsvi"))
    assert err.value.code == 32
    with pytest.raises(Refused) as err:
        client.call(Command.LOADLAYER, (Tag.INT32, -1), str(tmp_path / "missing.vsvi"))
    assert err.value.code == 32
    with pytest.raises(Refused) as err:
        client.call(Command.REFRESHLAYERREGION, 9, 0, 1, 0, 1, 0, 0)
    assert err.value.code == 30
    assert emulator.calls == [
        ("LOADLAYER", str(gray_dir)),
        ("REFRESHLAYERREGION", 1, 0, 99, 0, 49, 0, 2),
        ("REFRESHLAYERREGION", 1, 0, 1023, 0, 1023, 0, 0),
        ("LOADLAYER", str(tmp_path / "broken.vsvi")),
        ("LOADLAYER", str(tmp_path / "missing.vsvi")),
    ]


def _names(c: RawClient) -> list[str]:
    count = c.call(Command.GETNROFLAYERS).uints[0]
    return [LayerInfo.from_values(c.call(Command.GETLAYERINFO, n)).name for n in range(count)]


def _selected(c: RawClient) -> SelectedLayers:
    return SelectedLayers.from_values(c.call(Command.GETSELECTEDLAYERNR), "GETSELECTEDLAYERNR")


def _store(tmp_path: Path, name: str) -> str:
    store = TileStore(tmp_path / name, (3, HEIGHT, WIDTH), layer_name=name, tile_size=128)
    store.write_tile(0, 0, 0, 0, np.full((128, 128), 100, np.uint8))
    return str(store.write_vsvi())


def test_loadlayer_inserts_after_the_selected_or_the_reference_layer_as_vast_does(client, tmp_path):
    assert _names(client) == ["EM", "traces", "empty", "segmentation"]
    load = lambda name, after=-1: client.call(Command.LOADLAYER, (Tag.INT32, after), _store(tmp_path, name)).uints  # noqa: E731
    assert load("a") == [1]  # after the selected layer: VAST starts on its top layer, EM
    assert load("b") == [1]  # loading does not select the new layer: b goes above a
    assert _names(client) == ["EM", "b", "a", "traces", "empty", "segmentation"]
    assert _selected(client) == SelectedLayers(layer=0, em=0, anno=3, seg=5)
    client.call(Command.SETSELECTEDLAYERNR, (Tag.INT32, 5))
    assert load("c") == [6]
    assert load("d", after=2) == [3]  # right after layer 2 (a), whatever is selected
    assert _names(client) == ["EM", "b", "a", "d", "traces", "empty", "segmentation", "c"]
    # The selection follows its layer down; the annotation and segmentation commands find theirs.
    assert _selected(client) == SelectedLayers(layer=6, em=0, anno=4, seg=6)
    client.call(Command.REMOVELAYER, 3, 0)
    client.call(Command.SETSELECTEDLAYERNR, (Tag.INT32, 6))
    client.call(Command.REMOVELAYER, 6, 0)  # the selected layer: the one above it is selected
    assert _names(client) == ["EM", "b", "a", "traces", "empty", "segmentation"]
    assert _selected(client).layer == 5
    for number, code in ((0, 32), (3, 32), (6, 30)):  # the emulator's own layers stay; no layer 6
        with pytest.raises(Refused) as err:
            client.call(Command.REMOVELAYER, number, 1)
        assert err.value.code == code
    with pytest.raises(Refused) as err:
        load("e", after=6)
    assert err.value.code == 30


def test_annotation_layers_keep_their_place_when_the_skeleton_file_changes(client, skeleton_json, tmp_path):
    client.call(Command.LOADLAYER, (Tag.INT32, -1), _store(tmp_path, "a"))
    client.call(Command.SETAPILAYERSENABLED, 1)
    client.call(Command.SETSELECTEDAPILAYERNR, (Tag.INT32, 3))  # "empty"
    layers = load_skeleton_file(skeleton_json)
    save_skeleton_json(skeleton_json, [layers[0].model_copy(update={"name": "renamed"}), layers[1], AnnotationLayerData(name="more")])
    assert _names(client) == ["EM", "a", "renamed", "empty", "more", "segmentation"]
    assert client.call(Command.GETANNOLAYERNROFOBJECTS).uints == [0, 0]  # still "empty"
    save_skeleton_json(skeleton_json, layers[:1])
    assert _names(client) == ["EM", "a", "traces", "segmentation"]
    assert client.call(Command.GETANNOLAYERNROFOBJECTS).uints == [3, 1]  # "empty" is gone: the first one


def test_loaded_tile_store_shows_new_tiles_after_a_refresh(client, tmp_path):
    store = TileStore(tmp_path / "store", (3, HEIGHT, WIDTH), layer_name="membrane", tile_size=128)
    box = Box(x0=100, x1=300, y0=50, y1=150, z0=1, z1=2)
    store.write_region(box, np.full(box.shape, 40, np.uint8))
    layer = client.call(Command.LOADLAYER, (Tag.INT32, -1), str(store.write_vsvi())).uints[0]
    assert LayerInfo.from_values(client.call(Command.GETLAYERINFO, layer)).name == "membrane"
    read = lambda: raw_pixels(client.call(Command.GETEMIMAGERAW, layer, 0, *inclusive(box)), box.shape, "t")  # noqa: E731
    assert (read() == 40).all()
    store.write_region(box, np.full(box.shape, 90, np.uint8))
    client.call(Command.REFRESHLAYERREGION, layer, *inclusive(box))
    assert (read() == 90).all()
    # Mips the store does not have read as black, like VAST's MissingImagePolicy black.
    assert not any(client.call(Command.GETEMIMAGERAW, layer, 2, 0, 9, 0, 9, 1, 1))


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "command, values, code",
    [
        (Command.GETEMIMAGERAW, (0, 0, 0, WIDTH, 0, 0, 0, 0), 10),  # x past the edge
        (Command.GETEMIMAGERAW, (0, 0, 5, 4, 0, 0, 0, 0), 10),  # min > max
        (Command.GETEMIMAGERAW, (0, 0, 0, 0, 0, 0, 0, 3), 10),  # z past the last section
        (Command.GETEMIMAGERAW, (0, 8, 0, 0, 0, 0, 0, 0), 11),  # mip 8 of 0-7
        (Command.GETEMIMAGERAW, (7, 0, 0, 0, 0, 0, 0, 0), 30),  # no layer 7
        (Command.GETEMIMAGERAW, (3, 0, 0, 0, 0, 0, 0, 0), 31),  # the segmentation layer is no image layer
        (Command.GETEMIMAGERAW, (0, 0, 0, 0, 0, 0, 0), 3),  # one parameter short
        (Command.GETEMIMAGERAW, (0, 0, 0, 0, 0, 0, 0, 0, "x"), 3),  # a text too many
        (Command.GETSEGIMAGERAW, (1, 0, 300, 0, 0, 0, 0), 10),  # 300 > 501 >> 1
        (Command.GETLAYERINFO, (4,), 30),
        (Command.GETMIPMAPSCALEFACTORS, ((Tag.INT32, -1),), 30),
        (Command.GETINFO, (1,), 3),
        (999, (), 2),  # unknown command id
    ],
)
def test_error_codes(client, command, values, code):
    with pytest.raises(Refused) as err:
        client.call(command, *values)
    assert err.value.code == code
    assert client.call(Command.GETNROFLAYERS).uints == [4]  # the connection stays usable


def test_invalid_tagged_values_answer_error_3(client):
    for params in [b"\x01\x02", b"\x09", b"\x03abc", b"\x05\xff\x00\x00\x00ab"]:
        client.sock.sendall(encode_frame(Command.GETLAYERINFO, params))
        with pytest.raises(Refused) as err:
            client.reply(Command.GETLAYERINFO)
        assert err.value.code == 3


# ---------------------------------------------------------------------- faults


def test_fault_close_mid_reply(emulator, client):
    emulator.fault = "close_mid_reply"
    client.send(Command.GETINFO)
    with pytest.raises(VastProtocolError, match="connection closed after"):
        client.reply(Command.GETINFO)
    assert emulator.fault is None
    with RawClient(emulator.port) as again:
        assert again.call(Command.GETNROFLAYERS).uints == [4]


def test_fault_wrong_magic(emulator, client):
    emulator.fault = "wrong_magic"
    client.send(Command.GETNROFLAYERS)
    with pytest.raises(VastProtocolError, match="not the VAST protocol"):
        client.reply(Command.GETNROFLAYERS)
    with RawClient(emulator.port) as again:
        assert again.call(Command.GETNROFLAYERS).uints == [4]


@pytest.mark.parametrize("fault", ["length_too_large", "stall"])
def test_fault_stalls_until_the_client_gives_up(emulator, fault):
    emulator.fault = fault
    with RawClient(emulator.port) as c:
        c.send(Command.GETEMIMAGERAW, 0, 0, 0, 9, 0, 9, 0, 0)
        if fault == "length_too_large":  # the header does come (generous timeout: a busy machine)
            magic, length = HEADER.unpack(c.sock.recv(HEADER.size, socket.MSG_PEEK | socket.MSG_WAITALL))
            assert magic == MAGIC and length == 4 + 100 + 1024
        c.sock.settimeout(0.5)  # ... but never the whole reply
        with pytest.raises(TimeoutError):
            read_frame(c.sock, signed=True)
    assert emulator.wait_idle(TIMEOUT)  # closing ends the stall and its thread
    with RawClient(emulator.port) as again:  # the fault was used up
        assert len(again.call(Command.GETEMIMAGERAW, 0, 0, 0, 9, 0, 9, 0, 0)) == 100


def test_unknown_fault_is_refused(emulator):
    with pytest.raises(ValueError, match="close_mid_reply"):
        emulator.fault = "explode"
    assert set(FAULTS) == {"close_mid_reply", "wrong_magic", "length_too_large", "stall"}


# ---------------------------------------------------------------------- fuzz


def test_fuzzed_frames_never_break_the_server(emulator):
    rng = random.Random(2012)
    valid = [
        encode_frame(Command.GETINFO),
        encode_frame(Command.GETEMIMAGERAW, encode_values(0, 1, 0, 20, 0, 10, 0, 2)),
        encode_frame(Command.SETSEGIMAGERLE, encode_values(0, 0, 3, 0, 0, 0, 0, encode_rle(np.ones((1, 1, 4))))),
        encode_frame(Command.LOADLAYER, encode_values((Tag.INT32, -1), "/nonexistent/x.vsvi")),
        encode_frame(Command.GETLAYERINFO, encode_values(1)),
    ]
    for _ in range(300):
        kind = rng.choice(["random", "garbage_body", "truncated_tags", "mutated", "short"])
        expect_reply = False
        if kind == "random":  # no magic: the server must hang up
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(12, 80)))
            if data.startswith(MAGIC):
                continue
        elif kind == "garbage_body":  # well framed, nonsense inside: the server must answer
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
            data = encode_frame(rng.choice([rng.randrange(2**32), *map(int, Command)]), body)
            expect_reply = True
        elif kind == "truncated_tags":  # a valid request whose tagged values are cut, length fixed up
            frame = rng.choice(valid[1:])
            cut = rng.randrange(17, len(frame))
            data = encode_frame(int.from_bytes(frame[12:16], "little"), frame[16:cut])
            expect_reply = True
        elif kind == "mutated":  # a valid frame with a few bytes flipped anywhere (header included)
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            data = bytes(data)
            length = int.from_bytes(data[4:12], "little")
            expect_reply = data.startswith(MAGIC) and length == len(data) - 12
        else:  # a frame announcing more than it sends, then the client leaves
            frame = rng.choice(valid)
            data = frame[: rng.randrange(1, len(frame))]
        with RawClient(emulator.port) as c:
            try:
                c.sock.sendall(data)
            except OSError:
                continue  # the server already hung up: fine
            if expect_reply:
                result, _ = read_frame(c.sock, signed=True)
                assert result in (0, 1)
            elif kind == "random":
                try:  # the server hangs up: end of stream, or a reset as it left bytes unread
                    assert c.sock.recv(16) == b""
                except ConnectionResetError:
                    pass
    assert emulator.wait_idle(TIMEOUT)
    with RawClient(emulator.port) as c:
        assert VolumeInfo.from_values(c.call(Command.GETINFO)).size == (WIDTH, HEIGHT, 3)


def test_stop_closes_open_connections(gray_dir):
    emu = VastEmulator(gray_dir)
    port = emu.start()
    c = RawClient(port)
    assert c.call(Command.GETNROFLAYERS).uints == [2]
    emu.stop()
    assert emu.connections == 0
    assert c.sock.recv(16) == b""
    c.close()


# ---------------------------------------------------------------------- command line


def test_cli_runs_the_emulator_until_sigterm(gray_dir, skeleton_json):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "membraind", "vast-emulator", "--volume", str(gray_dir), "--port", "0",
         "--skeletons", str(skeleton_json), "--voxel-size", "4,4,30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = _first_line(proc, 60)
        assert line.startswith("VAST emulator on 127.0.0.1:") and "1 annotation 'traces'" in line, line
        port = int(line.split()[3].rsplit(":", 1)[1])
        with RawClient(port) as c:
            info = VolumeInfo.from_values(c.call(Command.GETINFO))
            assert info.size == (WIDTH, HEIGHT, 3) and info.voxel_size == (4.0, 4.0, 30.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_a_bad_voxel_size(gray_dir):
    result = run_cli("vast-emulator", "--volume", str(gray_dir), "--port", "0", "--voxel-size", "4,4")
    assert result.returncode == 2 and "--voxel-size: a voxel size is X,Y,Z in nm" in result.stderr


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(deadline - time.monotonic()):
                line = proc.stdout.readline()
                if line or proc.poll() is not None:
                    break
        else:
            line = ""
    if not line:
        raise AssertionError(f"no start line from vast-emulator: {proc.stderr.read() if proc.poll() is not None else ''}")
    return line.strip()
