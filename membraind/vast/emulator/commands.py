"""The emulated VAST: the layers, selections and view its remote API shows, and one handler per command.

:class:`EmulatedVast` answers a request's parameters with its reply payload, or raises
:class:`Refused` with VAST's error code; :mod:`membraind.vast.emulator.server` carries the
frames over TCP. It serves, as vast-protocol.md describes the commands:

- layer 0: the EM layer (named :data:`EM_NAME` unless told otherwise), a
  :class:`~membraind.volumes.volume.Volume` (8-bit gray, or RGB sent as B,G,R per pixel;
  16-bit volumes are sent as their high byte);
- layers 1..A: one annotation layer per :class:`AnnotationLayerData`, either given as
  data or read from a skeleton file that is read again whenever it changes on disk;
- layer A+1: an in-memory uint16 segmentation layer (:data:`SEGMENTATION_NAME`) of the
  mip-0 volume size, stored in blocks allocated on first write (all zero until written, see
  :class:`~membraind.vast.emulator.sparse_labels.SparseLabels`);
- every layer added by LOADLAYER (any volume :func:`open_volume` reads, usually a
  ``.vsvi``), inserted as VAST's client class says VAST inserts it: right after the
  reference layer, or after the selected layer when the reference is -1. The layers
  below it move down one number; REMOVELAYER closes such a layer again;
- every segmentation layer added by ADDNEWLAYER (type 2 or 4), inserted the same way:
  empty (all 0), of the mip-0 volume size, held as the first segmentation layer is.

Emulation choices where VAST's behaviour is not documented:

- The layer selected in the layer list (GETSELECTEDLAYERNR, the "selected layer" LOADLAYER
  inserts after) is the top layer, the EM layer, until SETSELECTEDLAYERNR selects another,
  as in a VAST that has just opened its volume. LOADLAYER does not select the new layer,
  so two loads in a row put the second one above the first. A selection follows its layer
  when layers are inserted above it; removing the selected layer selects the one above it.
- REMOVELAYER closes only layers LOADLAYER or ADDNEWLAYER added (the EM, annotation and
  segmentation layers it starts with hold the emulator's own data); others are refused with 32.
- ADDNEWLAYER makes segmentation layers only (type 2 or 4); annotation (1) and tool (3)
  layers are refused with 31, as the emulator's annotation layers come from skeleton data. Its force flag is
  accepted and ignored: a loaded image layer has nothing unsaved.
- An annotation layer keeps its place in the layer list when the skeleton file is read
  again; a layer the file gained is put below the last annotation layer, one it lost is
  closed.
- Sizes per mip follow VAST's rule ``floor(size / 2**mip)`` in x and y (z is never scaled);
  the mip count is the number of levels that keep at least one pixel, at most the
  volume's own mip count. GETMIPMAPSCALEFACTORS reports ``(2**m, 2**m, 1)`` for every layer.
- Segmentation at mip ``m``: voxel ``(x, y, z)`` stands for mip-0 voxel
  ``(x * 2**m, y * 2**m, z)``; reads take that voxel, writes fill its ``2**m x 2**m`` block.
- A loaded layer is read inside the EM volume's bounds; what lies outside the loaded
  volume, or at a mip it does not have, reads as 0 (VAST's "missing image: black").
- Annotation and segmentation commands act on the selected API layer of their kind when
  API layers are enabled (SETAPILAYERSENABLED), else on the "UI" selection, which is the
  first layer of the kind. Selecting a layer (SETSELECTEDAPILAYERNR) makes it the selected
  layer of its kind, as VAST's five-way selection (GETSELECTEDAPILAYERNR) suggests.
- REFRESHLAYERREGION takes a mip-0 region and accepts one reaching past the volume (it
  only makes a loaded layer re-read its tiles); LOADLAYER refuses (32) a file that
  :func:`open_volume` cannot open, as VAST refuses a layer file it cannot parse.
- Parameters may come as uint32 or int32 values but not both in one request, and their
  count must be exact.
- GETSEGIMAGERLE answers 22 ("RLE overflow, request raw instead") when the RLE reply would
  be larger than the raw one, which is what the code's wording suggests VAST does.
- An object id below the largest that no skeleton has is a deleted object's slot, as VAST
  keeps them: a skeleton row without the "used" flag, which SETSELECTEDANNOOBJECTNR refuses (20).
- The segmentation layer keeps a segment table (names, tree; boxes from the painted
  voxels): see :mod:`membraind.vast.emulator.segments` for ADDSEGMENT's placement and the
  names of segments painted before they were named.
- GETLAYERINFO's type follows ADDNEWLAYER's numbering (1 annotation, 2 segmentation), image 0.
- GETAPIVERSION answers :data:`API_VERSION` (VASTControlClass 5.x's own version number)
  unless another ``api_version`` is given, to stand in for an older VAST.
- Text (names, paths) travels in cp1252, one byte per character, as VAST's own client sends it.
- Windows mode (``windows_paths``): like VAST on a Windows workstation, LOADLAYER opens only
  Windows paths (``Z:\\lab\\...``, ``\\\\server\\share\\...``), through the emulator's own
  mapping of those drives and shares to local folders; a POSIX path is refused (32).

Error codes (result 0, then one tagged uint32): 2 unknown command id; 3 wrong parameter
count or types, undecodable tagged values; 4 the volume could not be read; 5 an internal
error of the emulator; 10 coordinates out of bounds (or min > max); 11 mip out of
bounds; 12 reply larger than :data:`MAX_REPLY`; 13 written data does not match the box; 14
ADDSEGMENT placement other than 0 (next) or 1 (child);
20 annotation object or segment number out of bounds, or no object selected; 21 no annotation or
segmentation layer; 30 invalid layer number; 31 invalid layer type (EM read of a
non-image layer, ADDNEWLAYER of a type other than segmentation); 32 LOADLAYER could not open the file, REMOVELAYER of a layer the
emulator cannot close.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from membraind.errors import InputError, MembraindError
from membraind.vast.emulator.segments import SegmentTable
from membraind.vast.emulator.sparse_labels import SparseLabels
from membraind.vast.paths import PathMap, is_windows_path, local_path
from membraind.vast.layouts import (
    AnnoObject,
    LayerInfo,
    LayerType,
    SelectedLayers,
    VolumeInfo,
    decode_rle,
    encode_names,
    encode_node_table,
    encode_object_table,
    encode_rle,
    encode_scale_factors,
    encode_segment_table,
)
from membraind.vast.protocol import Command, Tag, TaggedValues, VastProtocolError, decode_values, encode_values
from membraind.vast.skeletons import AnnotationLayerData, SkeletonObject, load_skeleton_file
from membraind.volumes.box import Box
from membraind.volumes.open_volume import open_volume
from membraind.volumes.volume import Volume

__all__ = ["EmulatedVast", "Refused", "MAX_REPLY", "API_VERSION", "EM_NAME", "SEGMENTATION_NAME"]

log = logging.getLogger(__name__)

MAX_REPLY = 1 << 30  # larger image requests are refused with error 12, as VAST refuses huge ones
API_VERSION = 5  # what GETAPIVERSION answers: VASTControlClass 5.x's version, VAST Lite 1.3 to 1.5

#: The emulator's layer names, used by the user guide's commands: the EM layer, and the segmentation layer.
EM_NAME, SEGMENTATION_NAME = "EM", "segmentation"

_TYPE = {"em": LayerType.IMAGE, "loaded": LayerType.IMAGE, "seg": LayerType.SEGMENTATION, "anno": LayerType.ANNOTATION}


class Refused(Exception):
    """Answer the current request with VAST error ``code``."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


@dataclass(eq=False)  # a layer is itself wherever it moves: compared (and selected) by identity
class _Layer:
    kind: str  # "em", "anno", "seg", "loaded"
    name: str
    volume: Volume | None = None  # em and loaded layers
    anno: AnnotationLayerData | None = None
    path: str = ""  # loaded layers: the file given to LOADLAYER
    labels: SparseLabels | None = None  # segmentation layers
    segments: SegmentTable | None = None  # segmentation layers: names and tree of their segments
    added: bool = False  # loaded or added through the API: REMOVELAYER may close it

    @property
    def is_image(self) -> bool:
        return self.kind in ("em", "loaded")

    @property
    def family(self) -> str:
        """The selection slot the layer occupies: image layers share the EM slot."""
        return "em" if self.is_image else self.kind


class EmulatedVast:
    """What an emulated VAST holds, and the handler of each remote-API command it answers.

    ``volume``: the EM layer, a :class:`Volume` or a path :func:`open_volume` reads.
    ``skeletons``: annotation layers, as data or as a skeleton file (JSON or VAST CSV, see
    :mod:`membraind.vast.skeletons`) re-read whenever its modification time, size or inode
    changes (:func:`~membraind.vast.skeletons.save_skeleton_json` replaces it atomically).

    :meth:`answer` serves one request at a time, whatever thread calls it. ``calls`` records
    ADDNEWLAYER, LOADLAYER, REFRESHLAYERREGION and REMOVELAYER requests, ``segmentation`` is the
    first segmentation layer (:meth:`labels_of` any segmentation layer by name). ``api_version`` is what GETAPIVERSION answers.
    """

    def __init__(
        self,
        volume: Volume | Path | str,
        *,
        skeletons: Path | str | list[AnnotationLayerData] | None = None,
        voxel_size: tuple[float, float, float] | None = None,
        cube_size: tuple[int, int, int] = (16, 16, 16),
        em_name: str = EM_NAME,
        segmentation_name: str = SEGMENTATION_NAME,
        windows_paths: list[PathMap] | None = None,
        api_version: int = API_VERSION,
    ) -> None:
        self.windows_paths = windows_paths  # VAST on Windows: LOADLAYER takes only Windows paths, mapped to here
        self.volume = volume if isinstance(volume, Volume) else open_volume(Path(volume), voxel_size)
        vx, vy, vz = voxel_size or self.volume.voxel_size
        self.voxel_size = (float(vx), float(vy), float(vz))
        if self.volume.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{self.volume.name} holds {self.volume.dtype} voxels; the emulator serves 8- or 16-bit EM")
        self.cube_size = cube_size
        z, y, x = self.volume.shape
        self.size = (x, y, z)
        self.mips = max(1, sum(1 for m in range(max(1, self.volume.mips)) if x >> m and y >> m))
        self.segmentation = SparseLabels(self.volume.shape)
        self.segments = SegmentTable(self.segmentation)
        self.view = (x // 2, y // 2, z // 2)
        self.calls: list[tuple[str | int, ...]] = []
        self.object_selections: list[int] = []  # SETSELECTEDANNOOBJECTNR's ids, in order

        self.api_version = api_version
        self._em = _Layer("em", em_name, volume=self.volume)
        self._order = [self._em, _Layer("seg", segmentation_name, labels=self.segmentation, segments=self.segments)]  # the layer list, top (layer 0) first
        self._skeleton_path: Path | None = None
        self._skeleton_stamp: tuple[int, int, int] | None = None
        if isinstance(skeletons, (str, Path)):
            self._skeleton_path = Path(skeletons)
            self._skeleton_stamp = self._stamp()
            self._anno = load_skeleton_file(self._skeleton_path)
        else:
            self._anno = list(skeletons or [])
        self._place_annotation_layers()
        self._api_enabled = False
        # "any" (the selected layer) and family -> layer; an unset family falls back to its first layer.
        self._ui_selected: dict[str, _Layer] = {"any": self._em}
        self._api_selected: dict[str, _Layer] = {"any": self._em}
        self._selected_object: dict[str, int] = {}  # annotation layer name -> selected object id

        self._lock = threading.RLock()  # one request at a time touches the emulated VAST
        self._handlers: dict[int, Callable[[TaggedValues], bytes]] = {
            Command.GETINFO: self._getinfo,
            Command.GETVIEWCOORDINATES: self._getview,
            Command.SETVIEWCOORDINATES: self._setview,
            Command.GETNROFLAYERS: lambda v: self._no_params(v) or encode_values(len(self._layers())),
            Command.GETLAYERINFO: self._getlayerinfo,
            Command.GETSELECTEDLAYERNR: lambda v: self._no_params(v) or self._selection(self._ui_selected),
            Command.SETSELECTEDLAYERNR: lambda v: self._select(v, self._ui_selected),
            Command.GETAPIVERSION: lambda v: self._no_params(v) or encode_values(self.api_version),
            Command.GETAPILAYERSENABLED: lambda v: self._no_params(v) or encode_values(int(self._api_enabled)),
            Command.SETAPILAYERSENABLED: self._setapienabled,
            Command.GETSELECTEDAPILAYERNR: lambda v: self._no_params(v) or self._selection(self._api_selected),
            Command.SETSELECTEDAPILAYERNR: lambda v: self._select(v, self._api_selected),
            Command.GETMIPMAPSCALEFACTORS: self._scalefactors,
            Command.GETEMIMAGERAW: self._getem,
            Command.GETSEGIMAGERAW: lambda v: self._getseg(v, rle=False),
            Command.GETSEGIMAGERLE: lambda v: self._getseg(v, rle=True),
            Command.SETSEGIMAGERAW: lambda v: self._setseg(v, rle=False),
            Command.SETSEGIMAGERLE: lambda v: self._setseg(v, rle=True),
            Command.GETALLSEGMENTDATA: self._segmentdata,
            Command.GETALLSEGMENTNAMES: self._segmentnames,
            Command.ADDSEGMENT: self._addsegment,
            Command.SETSEGMENTNAME: self._setsegmentname,
            Command.GETANNOLAYERNROFOBJECTS: self._nrofobjects,
            Command.GETANNOLAYEROBJECTDATA: self._objectdata,
            Command.GETANNOLAYEROBJECTNAMES: self._objectnames,
            Command.SETSELECTEDANNOOBJECTNR: self._selectobject,
            Command.GETSELECTEDANNOOBJECTNR: self._selectedobject,
            Command.GETAONODEDATA: self._nodedata,
            Command.ADDNEWLAYER: self._addnewlayer,
            Command.LOADLAYER: self._loadlayer,
            Command.REMOVELAYER: self._removelayer,
            Command.REFRESHLAYERREGION: self._refresh,
        }

    def answer(self, command: int, params: bytes) -> bytes:
        """The reply payload to ``command`` with its encoded ``params``.

        Raises :class:`Refused` with VAST's error code, or
        :class:`~membraind.vast.protocol.VastProtocolError` when ``params`` cannot be decoded.
        """
        with self._lock:
            handler = self._handlers.get(command)
            if handler is None:
                raise Refused(2, f"unknown command id {command}")
            self._refresh_skeletons()
            return handler(decode_values(params))

    # ------------------------------------------------------------------ layers and state

    def _layers(self) -> list[_Layer]:
        return self._order

    def _place_annotation_layers(self) -> None:
        """Give each layer of ``_anno`` a place in the layer list, keeping the places they had."""
        slots = [layer for layer in self._order if layer.kind == "anno"]
        for slot, data in zip(slots, self._anno):
            slot.anno, slot.name = data, data.name
        for slot in slots[len(self._anno) :]:  # the file lost a layer: it is closed
            self._order.remove(slot)
        if len(self._anno) > len(slots):
            at = self._order.index(slots[-1]) + 1 if slots else 1  # below the last one, else below the EM layer
            self._order[at:at] = [_Layer("anno", data.name, anno=data) for data in self._anno[len(slots) :]]

    def labels_of(self, name: str) -> SparseLabels:
        """The ids of the segmentation layer called ``name``."""
        with self._lock:
            return next(layer.labels for layer in self._layers() if layer.kind == "seg" and layer.name == name)

    def layer_names(self) -> list[str]:
        """Every layer as ``"N kind 'name'"``, in VAST order."""
        kinds = {"em": "EM", "anno": "annotation", "seg": "segmentation", "loaded": "loaded"}
        with self._lock:
            return [f"{n} {kinds[layer.kind]} {layer.name!r}" for n, layer in enumerate(self._layers())]

    def _layer(self, number: int) -> _Layer:
        layers = self._layers()
        if not 0 <= number < len(layers):
            raise Refused(30, f"layer {number} does not exist (0..{len(layers) - 1})")
        return layers[number]

    def _layer_for(self, family: str, selection: dict[str, _Layer] | None = None) -> tuple[int, _Layer]:
        """The layer annotation (``anno``) or segmentation (``seg``) commands act on now."""
        layers = self._layers()
        if selection is None:
            selection = self._api_selected if self._api_enabled else self._ui_selected
        chosen = selection.get(family)
        if chosen in layers:
            return layers.index(chosen), chosen
        for number, layer in enumerate(layers):
            if layer.family == family:
                return number, layer
        raise Refused(21, f"no {family} layer")

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._skeleton_path.stat()  # type: ignore[union-attr]
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh_skeletons(self) -> None:
        if self._skeleton_path is None:
            return
        stamp = self._stamp()
        if stamp is None or stamp == self._skeleton_stamp:
            return
        self._skeleton_stamp = stamp
        try:
            self._anno = load_skeleton_file(self._skeleton_path)
            self._place_annotation_layers()
            log.info("VAST emulator: re-read %s", self._skeleton_path)
        except MembraindError as exc:  # keep serving what was last read, like VAST keeps its layer
            log.warning("VAST emulator: keeping the previous skeletons: %s", exc)

    # ------------------------------------------------------------------ parameters

    @staticmethod
    def _params(values: TaggedValues, numbers: int, texts: int = 0, blocks: int = 0) -> list[int]:
        if values.uints and values.ints:
            raise Refused(3, "parameters mix uint32 and int32 values; their order would be lost")
        nums = values.uints or values.ints
        if (len(nums), len(values.texts), len(values.blocks), len(values.doubles), len(values.uint64s)) != (
            numbers, texts, blocks, 0, 0):  # fmt: skip
            raise Refused(3, f"expected {numbers} numbers, {texts} texts, {blocks} data blocks")
        return list(nums)

    def _no_params(self, values: TaggedValues) -> None:
        self._params(values, 0)

    def _mip(self, mip: int) -> int:
        if not 0 <= mip < self.mips:
            raise Refused(11, f"mip {mip} is not in 0..{self.mips - 1}")
        return mip

    def _box(self, mip: int, coords: list[int]) -> Box:
        """The half-open box of VAST's inclusive ``minx, maxx, miny, maxy, minz, maxz`` at ``mip``."""
        x0, x1, y0, y1, z0, z1 = coords
        limits = (self.size[0] >> mip, self.size[1] >> mip, self.size[2])
        for lo, hi, limit in ((x0, x1, limits[0]), (y0, y1, limits[1]), (z0, z1, limits[2])):
            if not 0 <= lo <= hi < limit:
                raise Refused(10, f"box {coords} leaves the volume ({limits} at mip {mip}) or has min > max")
        return Box(x0=x0, x1=x1 + 1, y0=y0, y1=y1 + 1, z0=z0, z1=z1 + 1, mip=mip)

    # ------------------------------------------------------------------ volume, view, layers

    def _getinfo(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return VolumeInfo(size=self.size, cube_size=self.cube_size, mips=self.mips, voxel_size=self.voxel_size,
                          view=self.view).to_payload()  # fmt: skip

    def _getview(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_values(*((Tag.INT32, v) for v in self.view))

    def _setview(self, values: TaggedValues) -> bytes:
        x, y, z = self._params(values, 3)
        if not all(0 <= v < limit for v, limit in zip((x, y, z), self.size)):
            raise Refused(10, f"view ({x}, {y}, {z}) lies outside the volume {self.size}")
        self.view = (x, y, z)
        return b""

    def _getlayerinfo(self, values: TaggedValues) -> bytes:
        (number,) = self._params(values, 1)
        layer = self._layer(number)
        bpp = {"anno": 0, "seg": 2}.get(layer.kind, 3 if layer.volume and layer.volume.channels == 3 else 1)
        info = LayerInfo(type=_TYPE[layer.kind], name=layer.name, bytes_per_pixel=bpp, editable=int(layer.kind != "em"))
        return info.to_payload()

    def _setapienabled(self, values: TaggedValues) -> bytes:
        (flag,) = self._params(values, 1)
        self._api_enabled = bool(flag)
        return b""

    def _selection(self, selection: dict[str, _Layer]) -> bytes:
        """GETSELECTEDLAYERNR's or GETSELECTEDAPILAYERNR's reply for ``selection``."""
        numbers = {}
        for family in ("em", "anno", "seg"):
            try:
                numbers[family] = self._layer_for(family, selection)[0]
            except Refused:
                numbers[family] = -1
        layers = self._layers()
        chosen = layers.index(selection["any"]) if selection["any"] in layers else 0
        return SelectedLayers(layer=chosen, **numbers).to_payload()  # tool: -1, the emulator has none

    def _select(self, values: TaggedValues, selection: dict[str, _Layer]) -> bytes:
        (number,) = self._params(values, 1)
        layer = self._layer(number)
        selection["any"] = selection[layer.family] = layer
        return b""

    def _scalefactors(self, values: TaggedValues) -> bytes:
        (number,) = self._params(values, 1)
        self._layer(number)
        return encode_scale_factors([(2**m, 2**m, 1) for m in range(self.mips)])

    def _insert(self, reference: int, layer: _Layer) -> bytes:
        """Put ``layer`` right after layer ``reference`` (-1: after the selected layer); its number as the reply."""
        layers = self._layers()
        selected = self._ui_selected["any"]
        after = reference if reference != -1 else layers.index(selected) if selected in layers else len(layers) - 1
        layers.insert(after + 1, layer)
        return encode_values(after + 1)

    def _reference(self, reference: int) -> None:
        if reference != -1 and not 0 <= reference < len(self._layers()):
            raise Refused(30, f"reference layer {reference} does not exist")

    def _addnewlayer(self, values: TaggedValues) -> bytes:
        kind, reference = self._params(values, 2, texts=1)
        if kind not in (LayerType.SEGMENTATION, LayerType.SEGMENTATION_XYZ):
            raise Refused(31, f"ADDNEWLAYER of type {kind}: the emulator adds segmentation layers (2 or 4) only")
        self._reference(reference)
        self.calls.append(("ADDNEWLAYER", kind, values.texts[0]))
        labels = SparseLabels(self.volume.shape)
        layer = _Layer("seg", values.texts[0], labels=labels, segments=SegmentTable(labels), added=True)
        return self._insert(reference, layer)

    def _loadlayer(self, values: TaggedValues) -> bytes:
        (reference,) = self._params(values, 1, texts=1)
        filename = values.texts[0]
        if not filename.strip():
            raise Refused(32, "LOADLAYER without a file name")
        self._reference(reference)
        self.calls.append(("LOADLAYER", filename))
        try:
            volume = open_volume(self._local_file(filename))
        except (MembraindError, OSError, ValueError) as exc:
            raise Refused(32, f"cannot load {filename}: {exc}") from None
        descriptor = getattr(volume, "descriptor", None)
        name = getattr(descriptor, "TargetLayerName", "") or Path(filename).stem
        return self._insert(reference, _Layer("loaded", name, volume=volume, path=filename, added=True))

    def _removelayer(self, values: TaggedValues) -> bytes:
        number, _force = self._params(values, 2)
        layer = self._layer(number)
        if not layer.added:
            raise Refused(32, f"layer {number} ({layer.name}) holds the emulator's own data; only loaded or added layers close")
        self.calls.append(("REMOVELAYER", number))
        layers = self._layers()
        above = layers[max(number - 1, 0)]
        layers.remove(layer)
        for selection in (self._ui_selected, self._api_selected):
            if selection["any"] is layer:
                selection["any"] = above
            if selection.get(layer.family) is layer:
                del selection[layer.family]
        return b""

    def _local_file(self, filename: str) -> Path:
        """The file LOADLAYER names, on this machine: in Windows mode only a Windows path
        (drive letter or share) can be opened, as on a real VAST workstation."""
        if self.windows_paths is None:
            return Path(filename)
        if not is_windows_path(filename):
            raise Refused(32, f"VAST on Windows cannot open {filename}: not a Windows path (drive letter or share)")
        try:
            return local_path(filename, self.windows_paths)
        except InputError as exc:
            raise Refused(32, f"cannot load {filename}: no such drive or share here ({exc})") from None

    def _refresh(self, values: TaggedValues) -> bytes:
        number, *coords = self._params(values, 7)
        layer = self._layer(number)
        # Only a cache invalidation: a region reaching past the volume (whole tiles of a
        # tile store at its edge) is accepted; only min > max is refused.
        if any(lo > hi for lo, hi in zip(coords[0::2], coords[1::2])):
            raise Refused(10, f"refresh region {coords} has min > max")
        self.calls.append(("REFRESHLAYERREGION", number, *coords))
        clear = getattr(layer.volume, "clear_cache", None)
        if callable(clear):
            clear()  # show tiles written since they were first read
        return b""

    # ------------------------------------------------------------------ image data

    def _getem(self, values: TaggedValues) -> bytes:
        number, mip, *coords = self._params(values, 8)
        layer = self._layer(number)
        if not layer.is_image:
            raise Refused(31, f"layer {number} ({layer.name}) is not an image layer")
        box = self._box(self._mip(mip), coords)
        channels = 3 if layer.volume is not None and layer.volume.channels == 3 else 1
        if box.voxels * channels > MAX_REPLY:
            raise Refused(12, f"{box.voxels * channels} bytes asked for; at most {MAX_REPLY}")
        try:
            pixels = self._read_image(layer, box, channels)
        except (MembraindError, OSError, ValueError) as exc:
            log.warning("VAST emulator: cannot read %s of layer %d: %s", box, number, exc)
            raise Refused(4, str(exc)) from None
        if pixels.dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)  # VAST image layers are 8 bit per channel
        if channels == 3:
            pixels = pixels[..., ::-1]  # VAST sends B, G, R
        return np.ascontiguousarray(pixels, np.uint8).tobytes()

    @staticmethod
    def _read_image(layer: _Layer, box: Box, channels: int) -> np.ndarray:
        volume = layer.volume
        assert volume is not None
        if layer.kind == "em":
            return volume.read(box)
        # A loaded layer may be smaller than the volume or lack mips: that part reads as black.
        out = np.zeros(box.shape + ((3,) if channels == 3 else ()), volume.dtype)
        if box.mip < volume.mips:
            inside = box.intersect(volume.bounds(box.mip))
            if not inside.empty:
                out[inside.slices(box)] = volume.read(inside)
        return out

    def _seg_layer(self) -> _Layer:
        """The segmentation layer a segment or segmentation command acts on."""
        _, layer = self._layer_for("seg")
        assert layer.labels is not None and layer.segments is not None
        return layer

    def _seg_box(self, values: TaggedValues, blocks: int) -> tuple[_Layer, Box]:
        """The segmentation layer the command acts on, and its box."""
        mip, *coords = self._params(values, 7, blocks=blocks)
        return self._seg_layer(), self._box(self._mip(mip), coords)

    def _getseg(self, values: TaggedValues, rle: bool) -> bytes:
        layer, box = self._seg_box(values, 0)
        if box.voxels * 2 > MAX_REPLY:
            raise Refused(12, f"{box.voxels * 2} bytes asked for; at most {MAX_REPLY}")
        s = 2**box.mip
        # Mip m voxel (x, y) is mip-0 voxel (x * s, y * s): read the covering mip-0 rows, keep every s-th.
        labels = layer.labels.read(box.z0, box.z1, box.y0 * s, (box.y1 - 1) * s + 1, box.x0 * s,
                                        (box.x1 - 1) * s + 1)[:, ::s, ::s]  # fmt: skip
        raw = np.ascontiguousarray(labels, "<u2").tobytes()
        if not rle:
            return raw
        encoded = encode_rle(labels)
        if len(encoded) > len(raw):  # as error 22's wording says: "request raw instead"
            raise Refused(22, f"RLE would take {len(encoded)} bytes, raw {len(raw)}")
        return encoded

    def _setseg(self, values: TaggedValues, rle: bool) -> bytes:
        layer, box = self._seg_box(values, 1)
        data = values.blocks[0]
        if rle:
            try:
                labels = decode_rle(data, box.shape)
            except VastProtocolError as exc:
                raise Refused(13, str(exc)) from None
        else:
            if len(data) != 2 * box.voxels:
                raise Refused(13, f"{len(data)} bytes for {box.voxels} voxels of 2 bytes")
            labels = np.frombuffer(data, "<u2").reshape(box.shape)
        s = 2**box.mip
        if s > 1:
            labels = np.repeat(np.repeat(labels, s, axis=1), s, axis=2)
        layer.labels.write(box.z0, box.y0 * s, box.x0 * s, labels)
        layer.segments.grow(int(labels.max(initial=0)))
        return b""

    # ------------------------------------------------------------------ segment table

    def _segmentdata(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_segment_table(self._seg_layer().segments.rows())

    def _segmentnames(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_names(self._seg_layer().segments.names)

    def _addsegment(self, values: TaggedValues) -> bytes:
        reference, next_or_child = self._params(values, 2, texts=1)
        segments = self._seg_layer().segments
        if next_or_child not in (0, 1):
            raise Refused(14, f"ADDSEGMENT's nextorchild is 0 (next) or 1 (child), not {next_or_child}")
        try:
            return encode_values(segments.add(values.texts[0], reference, bool(next_or_child)))
        except IndexError as exc:
            raise Refused(20, str(exc)) from None

    def _setsegmentname(self, values: TaggedValues) -> bytes:
        (segment,) = self._params(values, 1, texts=1)
        segments = self._seg_layer().segments
        try:
            segments.rename(segment, values.texts[0])
        except IndexError as exc:
            raise Refused(20, str(exc)) from None
        return b""

    # ------------------------------------------------------------------ annotation

    def _anno_layer(self) -> AnnotationLayerData:
        _, layer = self._layer_for("anno")
        assert layer.anno is not None
        return layer.anno

    @staticmethod
    def _table(data: AnnotationLayerData) -> list[SkeletonObject | None]:
        """Objects by row (row i = id i + 1); ids nobody uses are None."""
        rows: list[SkeletonObject | None] = [None] * max((obj.id for obj in data.objects), default=0)
        for obj in data.objects:
            rows[obj.id - 1] = obj
        return rows

    def _selected(self, data: AnnotationLayerData) -> int:
        chosen = self._selected_object.get(data.name, 0)
        return chosen if chosen <= len(self._table(data)) else 0

    def _nrofobjects(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        count = len(self._table(self._anno_layer()))
        return encode_values(count, 1 if count else 0)

    def _objectdata(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_object_table(
            [_anno_object(i + 1, obj) for i, obj in enumerate(self._table(self._anno_layer()))]
        )

    def _objectnames(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_names([obj.name if obj else "" for obj in self._table(self._anno_layer())])

    def _selectobject(self, values: TaggedValues) -> bytes:
        (object_id,) = self._params(values, 1)
        data = self._anno_layer()
        count = len(self._table(data))
        if not 1 <= object_id <= count:
            raise Refused(20, f"object {object_id} is not in 1..{count} of layer {data.name}")
        if self._table(data)[object_id - 1] is None:
            raise Refused(20, f"object {object_id} of layer {data.name} was deleted")
        self._selected_object[data.name] = object_id
        self.object_selections.append(object_id)
        return b""

    def _selectedobject(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        return encode_values(self._selected(self._anno_layer()))

    def _nodedata(self, values: TaggedValues) -> bytes:
        self._no_params(values)
        data = self._anno_layer()
        selected = self._selected(data)
        if not selected:
            raise Refused(20, f"no object of layer {data.name} is selected")
        obj = self._table(data)[selected - 1]
        return encode_node_table(obj.nodes if obj else [])


def _anno_object(object_id: int, obj: SkeletonObject | None) -> AnnoObject:
    """The object-table row of ``obj``; an id no object has is the slot of a deleted skeleton."""
    if obj is None:  # a deleted object: VAST keeps its slot (ids never shift), marked unused
        return AnnoObject(id=object_id, used=False)
    if not obj.nodes:
        return AnnoObject(id=object_id)
    xs, ys, zs = ([getattr(n, axis) for n in obj.nodes] for axis in "xyz")
    root = obj.nodes[0]
    return AnnoObject(id=object_id, anchor=(root.x, root.y, root.z),
                      bbox=(min(xs), min(ys), min(zs), max(xs), max(ys), max(zs)))  # fmt: skip

