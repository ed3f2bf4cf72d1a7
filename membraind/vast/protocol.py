"""VAST remote-API wire format: frames, tagged values, error codes (../shared/docs/vast-protocol.md §2).

Both directions share one frame: ``b"VAST"``, a uint64 count of the bytes that follow,
then a 4-byte word (the command id in requests, the int32 result in replies) and the
payload. Everything is little-endian. Small payloads are *tagged values*; bulk replies
(images, tables) are raw bytes. This module only converts between bytes and values; the
client and the emulator do the I/O.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from membraind.errors import MembraindError

__all__ = [
    "MAGIC", "DEFAULT_PORT", "HEADER", "MAX_PAYLOAD", "Command", "Tag", "TaggedValues", "VastError", "VastProtocolError",
    "VastRefused", "ERROR_MEANINGS", "encode_values", "decode_values", "encode_frame", "read_frame",
    "BULK_COMMANDS", "VastOutOfBounds", "VastLayerError", "VastDataError", "VastReadOnly", "refusal",
    "TEXT_ENCODING", "encode_text", "decode_text",
]  # fmt: skip

MAGIC = b"VAST"
DEFAULT_PORT = 22081  # VAST's remote API server default
HEADER = struct.Struct("<4sQ")  # magic, number of bytes that follow
WORD = struct.Struct("<I")
RESULT = struct.Struct("<i")
# A frame longer than this is refused before anything is allocated: a garbled length
# must not make either side try to read (or allocate) petabytes. 4 GiB covers the largest
# read the client ever asks for (it chunks reads far below that).
MAX_PAYLOAD = 4 << 30
# VAST is a Windows program: its client class sends text one byte per character, in the
# Windows code page of Western Europe and the Americas.
TEXT_ENCODING = "cp1252"


class Command(IntEnum):
    """Command ids of the remote API that membraind uses or emulates (§3)."""

    GETINFO = 1
    GETNUMBEROFSEGMENTS = 2
    SETSEGMENTNAME = 6
    GETVIEWCOORDINATES = 8
    GETVIEWZOOM = 9
    SETVIEWCOORDINATES = 10
    GETNROFLAYERS = 12
    GETLAYERINFO = 13
    GETALLSEGMENTDATA = 14
    GETALLSEGMENTNAMES = 15
    SETSELECTEDLAYERNR = 18
    GETSELECTEDLAYERNR = 19
    GETSEGIMAGERAW = 20
    GETSEGIMAGERLE = 21
    GETEMIMAGERAW = 30
    REFRESHLAYERREGION = 32
    SETSEGIMAGERAW = 50
    SETSEGIMAGERLE = 51
    ADDSEGMENT = 63
    GETANNOLAYERNROFOBJECTS = 70
    GETANNOLAYEROBJECTDATA = 71
    GETANNOLAYEROBJECTNAMES = 72
    SETSELECTEDANNOOBJECTNR = 76
    GETSELECTEDANNOOBJECTNR = 77
    GETAONODEDATA = 78
    GETAPIVERSION = 100
    GETAPILAYERSENABLED = 101
    SETAPILAYERSENABLED = 102
    GETSELECTEDAPILAYERNR = 103
    SETSELECTEDAPILAYERNR = 104
    ADDNEWLAYER = 120
    LOADLAYER = 121
    REMOVELAYER = 123
    GETMIPMAPSCALEFACTORS = 126


# Replies of these commands carry raw bytes after the header when they succeed (§2.4).
BULK_COMMANDS = frozenset({14, 15, 20, 21, 22, 23, 24, 25, 30, 31, 40, 41, 71, 72, 78, 79, 90, 94, 126})


class Tag(IntEnum):
    """Type tags of tagged values (§2.2)."""

    UINT32 = 1
    DOUBLE = 2
    TEXT = 3
    INT32 = 4
    DATA = 5
    UINT64 = 6


_SCALARS = {Tag.UINT32: struct.Struct("<I"), Tag.DOUBLE: struct.Struct("<d"), Tag.INT32: struct.Struct("<i"),
            Tag.UINT64: struct.Struct("<Q")}  # fmt: skip

# §2.6: what VAST's error codes mean, worded for the person reading the message.
ERROR_MEANINGS = {
    0: "no error",
    1: "unknown error",
    2: "unexpected data (client and VAST disagree about the API)",
    3: "VAST received invalid data",
    4: "VAST failed to read its data",
    5: "VAST internal error",
    6: "view modification is disabled",
    7: "segmentation modification is disabled",
    10: "coordinates out of bounds",
    11: "mip level out of bounds",
    12: "data size overflow (ask for a smaller region)",
    13: "data size mismatch",
    14: "parameter out of bounds",
    15: "could not enable the disk cache",
    20: "annotation object or segment number out of bounds",
    21: "no annotation or segmentation layer available",
    22: "RLE overflow (request raw data instead)",
    23: "invalid annotation object type",
    24: "annotation operation failed",
    30: "invalid layer number",
    31: "invalid layer type",
    32: "layer operation failed",
}


class VastError(MembraindError):
    """Anything that went wrong talking to VAST."""


class VastProtocolError(VastError):
    """The other side sent bytes that are not a valid frame, or closed/stalled mid-frame."""


class VastRefused(VastError):
    """VAST answered a request with an error code."""

    def __init__(self, command: int, code: int, detail: str = "") -> None:
        self.command, self.code = command, code
        try:
            name = Command(command).name
        except ValueError:
            name = f"command {command}"
        meaning = ERROR_MEANINGS.get(code, f"error code {code}")
        super().__init__(f"VAST refused {name}: {meaning}" + (f" ({detail})" if detail else ""))


class VastOutOfBounds(VastRefused):
    """Coordinates, mip, parameter or object number outside what VAST holds (10, 11, 14, 20)."""


class VastLayerError(VastRefused):
    """No such layer, the wrong kind of layer, or a layer operation failed (21, 30, 31, 32)."""


class VastDataError(VastRefused):
    """VAST could not use the data sent or cannot send that much (2, 3, 12, 13, 22)."""


class VastReadOnly(VastRefused):
    """The view or segmentation may not be modified (6, 7): unlock it in VAST."""


_REFUSALS: dict[int, type[VastRefused]] = {
    **dict.fromkeys((10, 11, 14, 20), VastOutOfBounds),
    **dict.fromkeys((21, 30, 31, 32), VastLayerError),
    **dict.fromkeys((2, 3, 12, 13, 22), VastDataError),
    **dict.fromkeys((6, 7), VastReadOnly),
}


def refusal(command: int, code: int, detail: str = "") -> VastRefused:
    """The exception for VAST's error ``code`` in reply to ``command`` (a :class:`VastRefused` subclass)."""
    return _REFUSALS.get(code, VastRefused)(command, code, detail)


@dataclass
class TaggedValues:
    """Decoded tagged values, collected per type in arrival order (as VAST's clients do)."""

    uints: list[int] = field(default_factory=list)
    doubles: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)
    uint64s: list[int] = field(default_factory=list)

    def expect(self, what: str, **counts: int) -> "TaggedValues":
        """Check how many values of each kind arrived (``uints=7, doubles=3``); else a protocol error."""
        for kind, count in counts.items():
            if len(getattr(self, kind)) < count:
                raise VastProtocolError(
                    f"VAST's reply to {what} holds {len(getattr(self, kind))} {kind}, expected {count}; "
                    "is this VAST version supported (VAST Lite 1.2 or later)?"
                )
        return self


def encode_values(*values: int | float | str | bytes | tuple[Tag, int | float]) -> bytes:
    """Tagged encoding of ``values``: int -> uint32, float -> double, str -> text, bytes -> data block.

    Pass ``(Tag.INT32, -1)`` (or another tag) where the type is not the default one.
    """
    out = bytearray()
    for value in values:
        tag, raw = value if isinstance(value, tuple) else (_default_tag(value), value)
        out.append(tag)
        if tag == Tag.TEXT:
            text = encode_text(str(raw))
            if b"\0" in text:
                raise ValueError("text sent to VAST cannot contain NUL characters")
            out += text + b"\0"
        elif tag == Tag.DATA:
            out += WORD.pack(len(raw)) + bytes(raw)
        else:
            try:
                out += _SCALARS[Tag(tag)].pack(raw)
            except struct.error:
                raise ValueError(f"{raw!r} does not fit a VAST {Tag(tag).name} value") from None
    return bytes(out)


def encode_text(text: str) -> bytes:
    """``text`` as VAST reads it: one byte per character in the Windows code page (cp1252).

    Raises :class:`ValueError` naming a character VAST could not receive.
    """
    try:
        return text.encode(TEXT_ENCODING)
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ValueError(f"{text!r} holds {bad!r} (U+{ord(bad):04X}), which VAST cannot receive: VAST reads text "
                         f"in the Windows code page ({TEXT_ENCODING}); rename it without that character") from None


def decode_text(raw: bytes) -> str:
    """Text from VAST (cp1252; the five bytes cp1252 leaves undefined become U+FFFD)."""
    return raw.decode(TEXT_ENCODING, errors="replace")


def _default_tag(value: object) -> Tag:
    if isinstance(value, bool) or isinstance(value, int):
        return Tag.UINT32
    if isinstance(value, float):
        return Tag.DOUBLE
    if isinstance(value, str):
        return Tag.TEXT
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Tag.DATA
    raise TypeError(f"cannot send {type(value).__name__} to VAST")


def decode_values(payload: bytes) -> TaggedValues:
    """Parse tagged values; a truncated value or an unknown tag is a :class:`VastProtocolError`."""
    values, view, i = TaggedValues(), memoryview(payload), 0
    while i < len(view):
        tag = view[i]
        i += 1
        if tag in _SCALARS:
            size = _SCALARS[Tag(tag)].size
            _need(view, i, size, tag)
            value = _SCALARS[Tag(tag)].unpack_from(view, i)[0]
            {Tag.UINT32: values.uints, Tag.DOUBLE: values.doubles, Tag.INT32: values.ints,
             Tag.UINT64: values.uint64s}[Tag(tag)].append(value)  # fmt: skip
            i += size
        elif tag == Tag.TEXT:
            end = bytes(view[i:]).find(b"\0")
            if end < 0:
                raise VastProtocolError("tagged text without its terminating NUL")
            values.texts.append(decode_text(bytes(view[i : i + end])))
            i += end + 1
        elif tag == Tag.DATA:
            _need(view, i, 4, tag)
            size = WORD.unpack_from(view, i)[0]
            _need(view, i + 4, size, tag)
            values.blocks.append(bytes(view[i + 4 : i + 4 + size]))
            i += 4 + size
        else:
            raise VastProtocolError(f"unknown value tag {tag} at byte {i - 1} of a tagged payload")
    return values


def _need(view: memoryview, start: int, size: int, tag: int) -> None:
    if start + size > len(view):
        raise VastProtocolError(f"tagged value (tag {tag}) cut short: {len(view) - start} of {size} bytes")


def encode_frame(word: int, payload: bytes = b"", *, signed: bool = False) -> bytes:
    """One frame: magic, length, the command id (``signed=False``) or result (``signed=True``), payload."""
    head = RESULT.pack(word) if signed else WORD.pack(word)
    return HEADER.pack(MAGIC, 4 + len(payload)) + head + payload


def read_frame(sock: socket.socket, *, signed: bool = False, limit: int = MAX_PAYLOAD) -> tuple[int, bytes]:
    """Read one frame from ``sock``; returns (command id or result, payload).

    Raises :class:`VastProtocolError` on a wrong magic, an impossible length, or a
    connection closed mid-frame; the socket's own timeout raises ``TimeoutError``.
    """
    magic, length = HEADER.unpack(recv_exactly(sock, HEADER.size, "frame header"))
    if magic != MAGIC:
        raise VastProtocolError(f"frame starts with {magic!r}, not {MAGIC!r}: not the VAST protocol")
    if not 4 <= length <= limit + 4:
        raise VastProtocolError(f"frame announces {length} bytes; at least 4 and at most {limit + 4} are allowed")
    body = recv_exactly(sock, length, "frame body")
    word = (RESULT if signed else WORD).unpack_from(body)[0]
    return word, body[4:]


def recv_exactly(sock: socket.socket, size: int, what: str) -> bytes:
    """Exactly ``size`` bytes from ``sock``; a close before that is a :class:`VastProtocolError`."""
    # The buffer grows with the bytes that actually arrive: a garbled or hostile length
    # must not allocate gigabytes up front.
    buffer = bytearray(min(size, 1 << 24))
    got = 0
    while got < size:
        if got == len(buffer):
            buffer.extend(bytes(min(len(buffer), size - len(buffer))))
        with memoryview(buffer) as view:
            n = sock.recv_into(view[got:], min(len(buffer) - got, 1 << 22))
        if n == 0:
            raise VastProtocolError(f"connection closed after {got} of {size} bytes of a {what}")
        got += n
    return bytes(buffer)
