"""VAST payload layouts: what the emulator encodes, the client decodes to the same values."""

from __future__ import annotations

import numpy as np
import pytest

from membraind.vast.layouts import (
    AnnoObject,
    LayerInfo,
    LayerType,
    Segment,
    SkeletonNode,
    VolumeInfo,
    decode_names,
    decode_node_table,
    decode_object_table,
    decode_rle,
    decode_scale_factors,
    decode_segment_table,
    encode_names,
    encode_node_table,
    encode_object_table,
    encode_rle,
    encode_scale_factors,
    encode_segment_table,
    raw_pixels,
)
from membraind.vast.protocol import Tag, VastProtocolError, decode_values, encode_values


def test_text_goes_on_the_wire_as_vast_sends_it_one_cp1252_byte_per_character():
    assert encode_values("Rücken-Gehirn") == b"\x03R\xfccken-Gehirn\x00"  # VASTControlClass sends char(...) bytes
    assert decode_values(b"\x03Gro\xdfhirn \x80\x00").texts == ["Großhirn €"]
    assert decode_names(b"\x01\x00\x00\x00K\xf6rper\x00") == ["Körper"]
    assert encode_names(["Körper"]) == b"\x01\x00\x00\x00K\xf6rper\x00"
    with pytest.raises(ValueError, match=r"'神' \(U\+795E\), which VAST cannot receive.*cp1252"):
        encode_values("/data/神経")


def test_layer_info_from_a_vast_sending_five_uints():
    # VAST before 1.5: tint colour, red/green/blue target colour, bytes per pixel (no inverted, solo mode).
    older = encode_values(*((Tag.INT32, v) for v in (2, 1, 1, 0, 0, 0, 0, 0)), 1.0, 0.0, 0.0, 0, 0, 0, 0, 2, "seg")
    info = LayerInfo.from_values(decode_values(older))
    assert (info.type, info.bytes_per_pixel, info.name, info.editable) == (LayerType.SEGMENTATION, 2, "seg", 1)


def test_tagged_values_round_trip_by_type_in_arrival_order():
    payload = encode_values(7, (Tag.INT32, -1), 2.5, "layer é", b"\x00\x01", (Tag.UINT64, 2**40), 9)
    values = decode_values(payload)
    assert values.uints == [7, 9] and values.ints == [-1] and values.doubles == [2.5]
    assert values.texts == ["layer é"] and values.blocks == [b"\x00\x01"] and values.uint64s == [2**40]
    with pytest.raises(VastProtocolError, match="unknown value tag 9"):
        decode_values(b"\x09abc")
    with pytest.raises(VastProtocolError, match="cut short"):
        decode_values(payload[:3])
    with pytest.raises(VastProtocolError, match="NUL"):
        decode_values(b"\x03abc")


def test_info_replies_round_trip():
    info = VolumeInfo(size=(700, 600, 5), cube_size=(16, 16, 8), mips=3, voxel_size=(4.0, 4.0, 30.0), view=(1, -2, 3))
    assert VolumeInfo.from_values(decode_values(info.to_payload())) == info
    layer = LayerInfo(type=0, name="EM", bytes_per_pixel=3)
    assert LayerInfo.from_values(decode_values(layer.to_payload())) == layer
    with pytest.raises(VastProtocolError, match="GETINFO.*uints"):
        VolumeInfo.from_values(decode_values(encode_values(1, 2)))


def test_tables_round_trip():
    objects = [AnnoObject(id=1, anchor=(5, 6, 7), bbox=(1, 2, 3, 4, 5, 6)), AnnoObject(id=2, type=0, parent=1)]
    assert decode_object_table(encode_object_table(objects)) == objects
    assert decode_names(encode_names(["axon 1", "", "dendrite"])) == ["axon 1", "", "dendrite"]
    nodes = [SkeletonNode(index=0, x=10, y=20, z=3), SkeletonNode(index=1, x=11, y=21, z=4, parent=0),
             SkeletonNode(index=2, x=9, y=19, z=4, parent=0)]  # fmt: skip
    raw = encode_node_table(nodes)
    assert len(raw) == 4 + 48 * 3  # VAST's 12-word node records
    assert decode_node_table(raw) == nodes
    assert decode_scale_factors(encode_scale_factors([(1, 1, 1), (2, 2, 1), (4, 4, 1)]))[2] == (4, 4, 1)
    with pytest.raises(VastProtocolError, match="announces 3 records"):
        decode_node_table(raw[:-1])


def test_segment_table_round_trips_and_an_unpainted_segment_has_no_box():
    rows = [Segment(id=0), Segment(id=1, flags=3, colors=(0xFF000000, 7), anchor=(5, 6, 7), child=2, next=3,
                                   bbox=(1, 2, 3, 40, 50, 6)),
            Segment(id=2, parent=1), Segment(id=3, previous=1, collapsed=1)]  # fmt: skip
    raw = encode_segment_table(rows)
    assert len(raw) == 4 + 17 * 4 * 4 and raw[-24:] == b"\xff" * 24  # no painted voxel: box words all -1
    assert decode_segment_table(raw) == rows
    assert rows[1].box().shape == (4, 49, 40) and rows[2].box() is None
    with pytest.raises(VastProtocolError, match="announces 4 records"):
        decode_segment_table(raw[:-1])


def test_rle_splits_long_runs_and_round_trips():
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 300, 500), np.uint16)  # runs far longer than 65535
    labels[1, 100:120] = rng.integers(0, 4, (20, 500))
    raw = encode_rle(labels)
    assert np.array_equal(decode_rle(raw, labels.shape), labels)
    assert np.frombuffer(raw, "<u2").reshape(-1, 2)[:, 1].max() <= 65535
    with pytest.raises(VastProtocolError, match="expands to"):
        decode_rle(raw, (2, 300, 501))


def test_em_pixels_gray_or_bgr():
    box = (2, 3, 4)
    gray = np.arange(24, dtype=np.uint8)
    assert np.array_equal(raw_pixels(gray.tobytes(), box, "t"), gray.reshape(box))
    bgr = np.stack([np.full(24, 1), np.full(24, 2), np.full(24, 3)], axis=-1).astype(np.uint8)
    rgb = raw_pixels(bgr.tobytes(), box, "t")
    assert rgb.shape == (2, 3, 4, 3) and tuple(rgb[0, 0, 0]) == (3, 2, 1)  # VAST sends B,G,R
    with pytest.raises(VastProtocolError, match="expected 1 .gray. or 3"):
        raw_pixels(b"\x00" * 25, box, "t")
