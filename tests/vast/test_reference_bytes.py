"""membraind's requests are the bytes VAST's own client sends, and the emulator's replies hold
what that client reads (docs/design-notes.md, "What vast-check asks a real VAST").

The reference is Daniel Berger's MATLAB ``VASTControlClass.m`` v5.14 (for VAST Lite 1.5).
Its ``sendmessage`` and ``bytesfrom*`` helpers are re-stated below from that file, and each
client method is compared with the class method that sends the same command; its
reply checks (``nrinuints == 7`` ...) are compared with what the emulator answers.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.protocol import Command, encode_frame
from membraind.vast.skeletons import AnnotationLayerData
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image, write_image
from membraind.volumes.tile_store import TileStore


# VASTControlClass.m's encoders: a tag byte, then the little-endian value.
def uint32(*values: int) -> bytes:  # bytesfromuint32
    return b"".join(b"\x01" + struct.pack("<I", v) for v in values)


def int32(*values: int) -> bytes:  # bytesfromint32
    return b"".join(b"\x04" + struct.pack("<i", v) for v in values)


def text(value: str) -> bytes:  # bytesfromtext: [3 uint8(value) 0], one byte per character
    return b"\x03" + bytes(ord(c) for c in value) + b"\x00"


def data(raw: bytes) -> bytes:  # bytesfromdata
    return b"\x05" + struct.pack("<I", len(raw)) + raw


def message(number: int, params: bytes = b"") -> bytes:  # sendmessage: 'VAST', uint64 length + 4, uint32 number
    return b"VAST" + struct.pack("<Q", len(params) + 4) + struct.pack("<I", number) + params


@pytest.fixture
def recorded(isbi, tmp_path):
    """A client and the emulator it talks to; yields (client, requests), requests as (command, params bytes)."""
    for z in range(2):
        write_image(tmp_path / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{z:02d}.png")[:64, :64])
    anchors = AnnotationLayerData.model_validate(
        {"name": "anchors", "objects": [{"id": 1, "name": "a", "nodes": [{"x": 1, "y": 2, "z": 0, "parent": None}]}]}
    )
    requests: list[tuple[int, bytes]] = []
    with VastEmulator(tmp_path, skeletons=[anchors]) as emulator:
        answer = emulator.vast.answer
        emulator.vast.answer = lambda command, params: requests.append((command, params)) or answer(command, params)
        with VastClient("127.0.0.1", emulator.port, timeout=10) as client:
            yield client, requests


def test_frames_are_built_as_sendmessage_builds_them():
    assert encode_frame(Command.GETLAYERINFO, uint32(3)) == message(13, uint32(3))


def test_requests_are_the_bytes_vast_control_class_sends(recorded, tmp_path):
    client, requests = recorded
    box = Box(x0=0, x1=10, y0=2, y1=8, z0=1, z1=2, mip=1)  # VAST's inclusive 0..9, 2..7, 1..1
    store = TileStore(tmp_path / "Rücken", (2, 64, 64), layer_name="Rücken", tile_size=64)
    store.write_tile(0, 0, 0, 0, np.zeros((64, 64), np.uint8))
    vsvi = str(store.write_vsvi())
    calls = [  # (what membraind does, what VASTControlClass sends for it)
        (client.info, message(1)),  # getinfo
        (client.api_version, message(100)),  # getapiversion
        (client.layer_count, message(12)),  # getnroflayers
        (lambda: client.layer_info(2), message(13, uint32(2))),  # getlayerinfo(2)
        (client.selected_layers, message(19)),  # getselectedlayernr
        (lambda: client.select_layer(0), message(18, int32(0))),  # setselectedlayernr(0)
        (client.view_position, message(8)),  # getviewcoordinates
        (lambda: client.scale_factors(0), message(126, uint32(0))),  # getmipmapscalefactors(0)
        (lambda: client.read_em(0, box), message(30, uint32(0, 1, 0, 9, 2, 7, 1, 1))),  # getemimageraw(0,1,0,9,2,7,1,1)
        (client.api_layers_enabled, message(101)),  # getapilayersenabled
        (lambda: client.enable_api_layers(True), message(102, uint32(1))),  # setapilayersenabled(1)
        (lambda: client.select_api_layer(1), message(104, int32(1))),  # setselectedapilayernr(1)
        (client.anno_objects, message(71)),  # getannolayerobjectdata
        (client.anno_object_names, message(72)),  # getannolayerobjectnames
        (lambda: client.select_anno_object(1), message(76, uint32(1))),  # setselectedannoobjectnr(1)
        (client.selected_anno_object, message(77)),  # getselectedannoobjectnr
        (lambda: client.select_api_layer(2), message(104, int32(2))),
        (lambda: client.read_segmentation(box, rle=False), message(20, uint32(1, 0, 9, 2, 7, 1, 1))),  # getsegimageraw
        (lambda: client.read_segmentation(box), message(21, uint32(1, 0, 9, 2, 7, 1, 1))),  # getsegimageRLE(..., 0)
        (lambda: client.write_segmentation(box, np.full(box.shape, 7, np.uint16)),  # setsegimageRLE: RLE smaller
         message(51, uint32(1, 0, 9, 2, 7, 1, 1) + data(struct.pack("<2H", 7, 60)))),
        (lambda: client.write_segmentation(box, np.arange(60, dtype=np.uint16).reshape(box.shape)),  # setsegimageraw
         message(50, uint32(1, 0, 9, 2, 7, 1, 1) + data(np.arange(60, dtype="<u2").tobytes()))),
        (lambda: client.load_layer(vsvi), message(121, int32(-1) + text(vsvi))),  # loadlayer(filename)
        (lambda: client.add_layer("cells"), message(120, int32(2, -1) + text("cells"))),  # addnewlayer(2, 'cells', -1)
        (lambda: client.refresh_layer_region(1, Box(x0=0, x1=64, y0=0, y1=32, z0=0, z1=1)),
         message(32, uint32(1, 0, 63, 0, 31, 0, 0))),  # refreshlayerregion(1, 0,63, 0,31, 0,0)
        (lambda: client.remove_layer(1), message(123, uint32(1, 0))),  # removelayer(1, 0)
    ]  # fmt: skip
    for call, expected in calls:
        call()
        command, params = requests.pop(0)
        assert encode_frame(command, params) == expected, f"{call} sent command {command}"
    assert requests == []


def test_replies_hold_what_vast_control_class_reads(recorded):
    client, _ = recorded
    counts = {  # command: (uints, ints, doubles, texts) as the class method checks them
        Command.GETINFO: (7, 3, 3, 0),
        Command.GETNROFLAYERS: (1, 0, 0, 0),
        Command.GETAPIVERSION: (1, 0, 0, 0),
        Command.GETSELECTEDLAYERNR: (0, 5, 0, 0),
        Command.GETSELECTEDAPILAYERNR: (0, 5, 0, 0),
        Command.GETVIEWCOORDINATES: (0, 3, 0, 0),
        Command.GETAPILAYERSENABLED: (1, 0, 0, 0),
        Command.GETANNOLAYERNROFOBJECTS: (2, 0, 0, 0),
        Command.GETSELECTEDANNOOBJECTNR: (1, 0, 0, 0),
    }
    for command, expected in {**counts, Command.GETLAYERINFO: (7, 8, 3, 1)}.items():
        values = client.call(command, *([0] if command == Command.GETLAYERINFO else []))
        assert (len(values.uints), len(values.ints), len(values.doubles), len(values.texts)) == expected, command.name
    # Bulk replies: a uint32 count, then fixed records (the class strides 21, 12 and 3 words).
    factors = client.call(Command.GETMIPMAPSCALEFACTORS, 0)
    (n,) = struct.unpack_from("<I", factors)
    assert len(factors) == 4 + 12 * n and struct.unpack_from("<3I", factors, 4) == (1, 1, 1)  # row 0: mip 0
    client.enable_api_layers(True)
    client.select_api_layer(1)
    table = client.call(Command.GETANNOLAYEROBJECTDATA)
    assert len(table) == 4 + 21 * 4 * struct.unpack_from("<I", table)[0]
    client.select_anno_object(1)
    nodes = client.call(Command.GETAONODEDATA)
    assert len(nodes) == 4 + 48 and struct.unpack_from("<3I", nodes, 4 + 4) == (1, 2, 0)  # x, y, z in words 1-3


def test_segment_table_requests_and_replies_are_those_of_vast_control_class(recorded):
    client, requests = recorded
    seg = client.find_layer("segmentation")
    assert client.add_segment(seg, "membrane") == 1
    client.set_segment_name(seg, 1, "Membran")
    client.write_segmentation(Box(x0=2, x1=5, y0=1, y1=3, z0=1, z1=2), np.ones((1, 2, 3), np.uint16))  # the only segmentation layer
    table = client.segments(seg)
    sent = [encode_frame(command, params) for command, params in requests if command in (6, 14, 15, 63)]
    assert sent == [
        message(63, uint32(0, 1) + text("membrane")),  # addsegment(0, 1, 'membrane'): a child of the top level
        message(6, uint32(1) + text("Membran")),  # setsegmentname(1, 'Membran')
        message(14),  # getallsegmentdata
        message(15),  # getallsegmentnames
    ]
    raw = client.call(Command.GETALLSEGMENTDATA)
    (n,) = struct.unpack_from("<I", raw)
    assert n == 2 and len(raw) == 4 + 17 * 4 * n  # row 0 is the background
    words = struct.unpack_from("<17I", raw, 4 + 17 * 4)  # segment 1: bounding box in words 11-16, mip 0, inclusive
    assert words[11:17] == (2, 1, 1, 4, 2, 1)
    names = client.call(Command.GETALLSEGMENTNAMES)
    assert names == struct.pack("<I", 2) + b"Background\0Membran\0"
    assert table[1].name == "Membran" and table[1].box() == Box(x0=2, x1=5, y0=1, y1=3, z0=1, z1=2)
