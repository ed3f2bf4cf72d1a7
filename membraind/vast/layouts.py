"""What VAST's replies and bulk payloads contain, as pydantic models (vast-protocol.md §4).

Each layout has one ``encode_*`` (used by the emulator) and one ``decode_*`` (used by the
client), so the two sides cannot drift apart; the tests round-trip them.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import numpy as np
from pydantic import ConfigDict

from membraind.strict import StrictModel
from membraind.volumes.box import Box
from membraind.vast.protocol import Tag, TaggedValues, VastProtocolError, decode_text, encode_text, encode_values

__all__ = [
    "VolumeInfo", "LayerInfo", "LayerType", "SelectedLayers", "AnnoObject", "SkeletonNode", "Skeleton", "NO_LINK", "FOLDER", "SKELETON",
    "encode_object_table", "decode_object_table", "encode_names", "decode_names",
    "encode_node_table", "decode_node_table", "encode_scale_factors", "decode_scale_factors",
    "encode_rle", "decode_rle", "raw_pixels", "Segment", "encode_segment_table", "decode_segment_table",
]  # fmt: skip

NO_LINK = 0xFFFFFFFF
_COUNT = struct.Struct("<I")
_OBJECT_WORDS = 21
FOLDER, SKELETON = 0, 1  # annotation object types (low 16 bits of an object row's word 0)
_USED_BIT = 16  # word 0: type in the low 16 bits, flags above; flag bit 0 is "used"
_SEGMENT_WORDS = 17  # flags, col1, col2, anchor xyz, parent, child, prev, next, collapsednr, bbox x1 y1 z1 x2 y2 z2
_NO_BOX = (-1, -1, -1, -1, -1, -1)  # the bounding box of a segment with no painted voxel (emulation choice)
_NODE = struct.Struct("<I3I3IId2I")  # 48 bytes: flags, x, y, z, parent, child, child2, pad, radius, 2 unknown


class _Frozen(StrictModel):
    model_config = ConfigDict(frozen=True)


class VolumeInfo(_Frozen):
    """GETINFO: the mip-0 volume, VAST's cube size, mip count, voxel size (nm), view centre."""

    size: tuple[int, int, int]  # x, y, z
    cube_size: tuple[int, int, int] = (16, 16, 16)
    mips: int = 1
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    view: tuple[int, int, int] = (0, 0, 0)

    def to_payload(self) -> bytes:
        return encode_values(
            *self.size, *self.cube_size, self.mips, *map(float, self.voxel_size),
            *((Tag.INT32, v) for v in self.view),
        )  # fmt: skip

    @classmethod
    def from_values(cls, values: TaggedValues) -> "VolumeInfo":
        values.expect("GETINFO", uints=7, doubles=3, ints=3)
        u = values.uints
        return cls(size=tuple(u[0:3]), cube_size=tuple(u[3:6]), mips=u[6], voxel_size=tuple(values.doubles[:3]),
                   view=tuple(values.ints[:3]))  # fmt: skip


class LayerType(IntEnum):
    """GETLAYERINFO's layer types, numbered as VAST's ADDNEWLAYER numbers them (image is 0,
    the one type ADDNEWLAYER cannot make; VAST documents no list of its own)."""

    IMAGE = 0
    ANNOTATION = 1
    SEGMENTATION = 2
    TOOL = 3
    SEGMENTATION_XYZ = 4  # segmentation with mips in z too


class LayerInfo(_Frozen):
    """GETLAYERINFO, the fields membraind uses (the rest are sent as VAST's defaults)."""

    type: int  # a LayerType value; VAST may know more
    name: str
    bytes_per_pixel: int = 1
    editable: int = 0
    visible: int = 1

    def to_payload(self) -> bytes:
        ints = (self.type, self.editable, self.visible, 0, 0, 0, 0, 0)
        return encode_values(
            *((Tag.INT32, v) for v in ints), 1.0, 0.0, 0.0,
            0, 0, 0, 0, self.bytes_per_pixel, 0, 0, self.name,
        )  # fmt: skip

    @classmethod
    def from_values(cls, values: TaggedValues) -> "LayerInfo":
        values.expect("GETLAYERINFO", ints=8, uints=5, texts=1)  # VAST before 1.5 sends 5 uints; bytes per pixel is the 5th
        i = values.ints
        return cls(type=i[0], editable=i[1], visible=i[2], bytes_per_pixel=values.uints[4], name=values.texts[0])


class SelectedLayers(_Frozen):
    """GETSELECTEDLAYERNR (the user's selection) or GETSELECTEDAPILAYERNR (the API's): the
    selected layer, and the selected layer of each kind; -1 where none is."""

    layer: int
    em: int = -1
    anno: int = -1
    seg: int = -1
    tool: int = -1

    def to_payload(self) -> bytes:
        return encode_values(*((Tag.INT32, v) for v in (self.layer, self.em, self.anno, self.seg, self.tool)))

    @classmethod
    def from_values(cls, values: TaggedValues, what: str) -> "SelectedLayers":
        """Five ints (VAST Lite 1.3 on), or three (layer, EM, segmentation) from older VASTs."""
        i = values.expect(what, ints=3).ints
        if len(i) >= 5:
            return cls(layer=i[0], em=i[1], anno=i[2], seg=i[3], tool=i[4])
        return cls(layer=i[0], em=i[1], seg=i[2])


class AnnoObject(_Frozen):
    """One row of an annotation layer's object table (ids are 1-based).

    ``used`` is False for the slot of a deleted object: VAST keeps the row (ids never
    shift) and refuses to select it.
    """

    id: int
    type: int = SKELETON  # or FOLDER
    used: bool = True
    anchor: tuple[int, int, int] = (0, 0, 0)
    parent: int = 0
    bbox: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)


class SkeletonNode(_Frozen):
    """A skeleton node: its depth-first number in its object, mip-0 position, parent (or None)."""

    index: int
    x: int
    y: int
    z: int
    parent: int | None = None


class Skeleton(_Frozen):
    """A skeleton object as the client reads it: its table row, name and nodes."""

    row: AnnoObject
    name: str
    nodes: list[SkeletonNode]


class Segment(_Frozen):
    """One row of a segmentation layer's segment table (GETALLSEGMENTDATA, with its name).

    Ids are the row numbers; row 0 is the background. ``parent``, ``child``, ``previous``
    and ``next`` link the segment tree VAST shows (0: none); a "folder" is a segment with
    children. ``bbox`` is the mip-0 box around its painted voxels, VAST's inclusive
    ``(x1, y1, z1, x2, y2, z2)``, or None when nothing is painted with it.
    """

    id: int
    name: str = ""
    flags: int = 0
    colors: tuple[int, int] = (0, 0)
    anchor: tuple[int, int, int] = (0, 0, 0)
    parent: int = 0
    child: int = 0
    previous: int = 0
    next: int = 0
    collapsed: int = 0
    bbox: tuple[int, int, int, int, int, int] | None = None

    def box(self) -> Box | None:
        """The painted voxels' mip-0 box, half-open (None: nothing painted)."""
        if self.bbox is None:
            return None
        x1, y1, z1, x2, y2, z2 = self.bbox
        return Box(x0=x1, x1=x2 + 1, y0=y1, y1=y2 + 1, z0=z1, z1=z2 + 1, mip=0)


def encode_segment_table(segments: list[Segment]) -> bytes:
    """GETALLSEGMENTDATA's reply: uint32 N, then 17 words per row (row i is segment id i, row 0 the background)."""
    words = np.zeros((len(segments), _SEGMENT_WORDS), "<i8")
    for row, seg in zip(words, segments):
        row[:] = (seg.flags, *seg.colors, *seg.anchor, seg.parent, seg.child, seg.previous, seg.next, seg.collapsed,
                  *(seg.bbox or _NO_BOX))  # fmt: skip
    return _COUNT.pack(len(segments)) + (words & 0xFFFFFFFF).astype("<u4").tobytes()


def decode_segment_table(raw: bytes) -> list[Segment]:
    """The rows of a GETALLSEGMENTDATA reply, names empty (GETALLSEGMENTNAMES holds them)."""
    n = _count(raw, "segment table", 4 * _SEGMENT_WORDS)
    words = np.frombuffer(raw, "<u4", n * _SEGMENT_WORDS, 4).reshape(n, _SEGMENT_WORDS).astype(np.int64)
    signed = np.where(words >= 1 << 31, words - (1 << 32), words)  # anchor and box are signed: -1 is "none"
    segments = []
    for i, (w, s) in enumerate(zip(words, signed)):
        box = tuple(int(v) for v in s[11:17])
        empty = any(v < 0 for v in box) or box[0] > box[3] or box[1] > box[4] or box[2] > box[5]
        segments.append(Segment(
            id=i, flags=int(w[0]), colors=(int(w[1]), int(w[2])), anchor=tuple(int(v) for v in s[3:6]),
            parent=int(w[6]), child=int(w[7]), previous=int(w[8]), next=int(w[9]), collapsed=int(w[10]),
            bbox=None if empty else box,
        ))  # fmt: skip
    return segments


def _count(raw: bytes, what: str, record: int) -> int:
    if len(raw) < 4:
        raise VastProtocolError(f"{what}: {len(raw)} bytes, too short for its count")
    n = _COUNT.unpack_from(raw)[0]
    if len(raw) < 4 + n * record:
        raise VastProtocolError(f"{what}: announces {n} records of {record} bytes but holds {len(raw) - 4} bytes")
    return n


def encode_object_table(objects: list[AnnoObject]) -> bytes:
    words = np.zeros((len(objects), _OBJECT_WORDS), "<u4")
    for row, obj in zip(words, objects):
        row[0] = obj.type | (int(obj.used) << _USED_BIT)
        row[3:6] = obj.anchor
        row[6] = obj.parent
        row[11:17] = obj.bbox
    return _COUNT.pack(len(objects)) + words.tobytes()


def decode_object_table(raw: bytes) -> list[AnnoObject]:
    n = _count(raw, "annotation object table", 4 * _OBJECT_WORDS)
    words = np.frombuffer(raw, "<u4", n * _OBJECT_WORDS, 4).reshape(n, _OBJECT_WORDS)
    return [
        AnnoObject(id=i + 1, type=int(w[0] & 0xFFFF), used=bool(w[0] >> _USED_BIT & 1), anchor=tuple(int(v) for v in w[3:6]), parent=int(w[6]),
                   bbox=tuple(int(v) for v in w[11:17]))  # fmt: skip
        for i, w in enumerate(words)
    ]


def encode_names(names: list[str]) -> bytes:
    return _COUNT.pack(len(names)) + b"".join(encode_text(name) + b"\0" for name in names)


def decode_names(raw: bytes) -> list[str]:
    n = _count(raw, "name list", 0)
    parts = raw[4:].split(b"\0")
    if len(parts) < n + 1:  # n names, each NUL-terminated
        raise VastProtocolError(f"name list announces {n} names but holds {len(parts) - 1}")
    return [decode_text(p) for p in parts[:n]]


def encode_node_table(nodes: list[SkeletonNode]) -> bytes:
    children: dict[int, list[int]] = {}
    for node in nodes:
        if node.parent is not None:
            children.setdefault(node.parent, []).append(node.index)
    out = bytearray(_COUNT.pack(len(nodes)))
    for node in nodes:
        kids = children.get(node.index, []) + [NO_LINK, NO_LINK]
        parent = NO_LINK if node.parent is None else node.parent
        out += _NODE.pack(0, node.x, node.y, node.z, parent, kids[0], kids[1], 0, 1.0, 0, 0)
    return bytes(out)


def decode_node_table(raw: bytes) -> list[SkeletonNode]:
    n = _count(raw, "skeleton node table", _NODE.size)
    nodes = []
    for i in range(n):
        _, x, y, z, parent, *_rest = _NODE.unpack_from(raw, 4 + i * _NODE.size)
        nodes.append(SkeletonNode(index=i, x=x, y=y, z=z, parent=None if parent == NO_LINK else parent))
    return nodes


def encode_scale_factors(factors: list[tuple[int, int, int]]) -> bytes:
    return _COUNT.pack(len(factors)) + np.asarray(factors, "<u4").reshape(-1).tobytes()


def decode_scale_factors(raw: bytes) -> list[tuple[int, int, int]]:
    n = _count(raw, "mipmap scale factors", 12)
    words = np.frombuffer(raw, "<u4", 3 * n, 4).reshape(n, 3)
    return [tuple(int(v) for v in row) for row in words]


def encode_rle(labels: np.ndarray) -> bytes:
    """uint16 (value, run) pairs of ``labels`` in x-fastest order, runs at most 65535."""
    flat = np.ascontiguousarray(labels, dtype="<u2").reshape(-1)
    if not flat.size:
        return b""
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size])
    values = flat[starts]
    pieces = -(-lengths // 65535)  # long runs split into several pairs
    values = np.repeat(values, pieces)
    runs = np.full(values.size, 65535, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    runs[last] = lengths - (pieces - 1) * 65535
    return np.stack([values, runs.astype("<u2")], axis=1).astype("<u2").tobytes()


def decode_rle(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Expand uint16 (value, run) pairs into a uint16 array of ``shape``."""
    if len(raw) % 4:
        raise VastProtocolError(f"RLE payload of {len(raw)} bytes is not made of 4-byte (value, run) pairs")
    pairs = np.frombuffer(raw, "<u2").reshape(-1, 2)
    total = int(pairs[:, 1].sum(dtype=np.int64))
    expected = int(np.prod(shape))
    if total != expected:
        raise VastProtocolError(f"RLE payload expands to {total} voxels, expected {expected} for {shape}")
    return np.repeat(pairs[:, 0], pairs[:, 1]).reshape(shape)


def raw_pixels(raw: bytes, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """EM bytes of a ``(z, y, x)`` box: uint8 gray, or B,G,R colour returned as R,G,B ``(z, y, x, 3)``."""
    voxels = int(np.prod(shape))
    if voxels and len(raw) == voxels:
        return np.frombuffer(raw, np.uint8).reshape(shape)
    if voxels and len(raw) == 3 * voxels:
        return np.frombuffer(raw, np.uint8).reshape(*shape, 3)[..., ::-1]
    raise VastProtocolError(
        f"{what}: {len(raw)} bytes for {shape[2]} x {shape[1]} x {shape[0]} voxels; "
        "expected 1 (gray) or 3 (colour) bytes per voxel"
    )
