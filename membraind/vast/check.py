"""``membraind vast-check``: does this VAST behave as membraind expects? A report a lab can send back.

The check makes only harmless calls: it reads (API version, volume, layers, mip scale
factors, a small EM box at mips 0 and 1, an annotation layer's object table and
skeletons), and it loads a tiny generated ``.vsvi`` as a new layer, re-reads it after
changing its tiles, and removes it again. The user's layer selection, selected
skeleton, view and API-layer switch are the same afterwards (a change is undone and
reported).

Each check is a small function of a :class:`_Session` returning its result rows;
:data:`CHECKS` lists them in order and :func:`run_checks` runs them into a
:class:`CheckReport`. A check that VAST refuses or that breaks becomes a ``fail`` row and
the others still run. What each check shows, and what only a real VAST can tell:
(docs/design-notes.md, "What vast-check asks a real VAST").
"""

from __future__ import annotations

import datetime
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from membraind import __version__
from membraind.errors import InputError, MembraindError
from membraind.strict import StrictModel
from membraind.vast.client import MIN_API_VERSION, VastClient
from membraind.vast.layouts import SKELETON, LayerInfo, LayerType, SelectedLayers, VolumeInfo
from membraind.vast.paths import PathMap, describe_path_maps, vast_path
from membraind.vast.protocol import Command, VastError, VastRefused
from membraind.volumes.box import Box
from membraind.volumes.mips import downsample
from membraind.volumes.tile_store import TileStore

__all__ = ["CheckRow", "CheckReport", "CHECKS", "run_checks", "TEST_LAYER_PREFIX"]

Status = Literal["ok", "warn", "fail"]

#: The name of the layer vast-check loads starts with this; "ü" tests text in VAST's code page.
TEST_LAYER_PREFIX = "membraind vast-check ü"
READ_SIZE = 64  # side of the EM box read at mip 0 (mip 1: half of it)
MIP_TOLERANCE = 2.0  # mean gray-level difference still counted as "the 2 x 2 mean" (rounding, compression)


class CheckRow(StrictModel):
    """One result: what was checked, what membraind expects, what VAST showed, and the verdict."""

    check: str
    expected: str
    seen: str
    status: Status


class CheckReport(StrictModel):
    """Everything ``vast-check`` found, as printed and as the ``--report`` JSON file."""

    vast: str  # host:port
    membraind: str = __version__
    checked_at: str  # UTC, ISO 8601
    rows: list[CheckRow]

    @property
    def failed(self) -> list[CheckRow]:
        return [row for row in self.rows if row.status == "fail"]

    def table(self, width: int = 100) -> str:
        """The report as text: one block per check, then a summary line."""
        lines = [f"membraind {self.membraind} checked the VAST at {self.vast} ({self.checked_at})", ""]
        for row in self.rows:
            lines += textwrap.wrap(f"{row.check}: {row.seen}", width, initial_indent=f"{row.status:<6}",
                                   subsequent_indent=" " * 8, break_on_hyphens=False)  # fmt: skip
            lines += textwrap.wrap(f"expected {row.expected}", width, initial_indent=" " * 6, subsequent_indent=" " * 8,
                                   break_on_hyphens=False)  # fmt: skip
        counts = {status: sum(row.status == status for row in self.rows) for status in ("ok", "warn", "fail")}
        verdict = (
            "VAST differs from what membraind expects: please send this report (--report FILE) to membraind's maintainers"
            if counts["fail"]
            else "everything membraind relies on matched" + (" (warn: see above)" if counts["warn"] else "")
        )
        lines += ["", *textwrap.wrap(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail: {verdict}", width)]
        return "\n".join(lines)


class _NotTried(Exception):
    """A check needs what an earlier check could not read."""


def _row(check: str, expected: str, seen: str, ok: bool, otherwise: Status = "fail") -> CheckRow:
    return CheckRow(check=check, expected=expected, seen=seen, status="ok" if ok else otherwise)


@dataclass
class _State:
    """What the user sees and membraind must leave as it was."""

    selected: SelectedLayers
    view: tuple[int, int, int]
    api_layers: bool


_FOUND = {"info": "volume (GETINFO)", "layers": "layer list", "em": "EM layer", "start": "user's selection and view"}


@dataclass
class _Session:
    """The connection, the options, and what earlier checks found out for later ones."""

    client: VastClient
    em_layer: int | str | None
    anno_layer: int | str | None
    scratch: Path
    paths: list[PathMap] = field(default_factory=list)
    start: _State | None = None
    info: VolumeInfo | None = None
    layers: list[LayerInfo] = field(default_factory=list)
    em: int | None = None

    def need(self, *names: str) -> None:
        """Raise :class:`_NotTried` unless earlier checks found ``names`` (attributes of the session)."""
        missing = [_FOUND[name] for name in names if getattr(self, name) in (None, [])]
        if missing:
            raise _NotTried(f"not tried: it needs the {' and '.join(missing)}, which a check above could not read")

    def state(self) -> _State:
        c = self.client
        return _State(selected=c.selected_layers(), view=c.view_position(), api_layers=c.api_layers_enabled())

    def read_box(self) -> Box:
        """A mip-0 box of at most READ_SIZE pixels around the view, on even pixels (so mip 1 holds it exactly)."""
        self.need("info")
        assert self.info is not None
        (x, y, z), (vx, vy, vz) = self.info.size, self.info.view
        w, h = (max(2, min(READ_SIZE, n - n % 2)) for n in (x, y))
        x0, y0 = (max(0, min(v - s // 2, n - s)) // 2 * 2 for v, s, n in ((vx, w, x), (vy, h, y)))
        z0 = max(0, min(vz, z - 1))
        return Box(x0=x0, x1=min(x0 + w, x), y0=y0, y1=min(y0 + h, y), z0=z0, z1=z0 + 1, mip=0)

    def layer_named(self, wanted: int | str, what: str) -> int:
        if isinstance(wanted, int):
            if not 0 <= wanted < len(self.layers):
                raise MembraindError(f"{what} {wanted}: VAST has layers 0..{len(self.layers) - 1}")
            return wanted
        for number, layer in enumerate(self.layers):
            if layer.name == wanted:
                return number
        raise MembraindError(f"{what} {wanted!r}: VAST has no layer of that name ({_layer_list(self.layers)})")


def _layer_list(layers: list[LayerInfo]) -> str:
    return ", ".join(f"{n} {_type_name(layer.type)} {layer.name!r}" for n, layer in enumerate(layers)) or "no layers"


def _type_name(number: int) -> str:
    try:
        return LayerType(number).name.lower().replace("_", " ")
    except ValueError:
        return f"type {number}"


# ---------------------------------------------------------------------- the checks


def check_api_version(s: _Session) -> list[CheckRow]:
    version = s.client.api_version()
    return [_row("API version (GETAPIVERSION)", f"{MIN_API_VERSION} or later (VASTControlClass 5.x: VAST Lite 1.3 to 1.5)",
                 str(version), version >= MIN_API_VERSION)]  # fmt: skip


def check_volume(s: _Session) -> list[CheckRow]:
    info = s.info = s.client.info()
    (x, y, z), (cx, cy, cz), (vx, vy, vz) = info.size, info.cube_size, info.voxel_size
    seen = (f"{x} x {y} x {z} voxels, {info.mips} mips, cubes of {cx} x {cy} x {cz}, voxels of {vx:g} x {vy:g} x "
            f"{vz:g} nm, view at {info.view}")  # fmt: skip
    sane = min(*info.size, *info.cube_size, info.mips) >= 1 and min(info.voxel_size) > 0
    inside = all(0 <= v < n for v, n in zip(info.view, info.size))
    return [_row("Volume (GETINFO)", "7 uints, 3 doubles, 3 ints: sizes, cube sizes and mip count of at least 1, "
                 "positive voxel sizes, the view inside the volume", seen, sane and inside)]  # fmt: skip


def check_layers(s: _Session) -> list[CheckRow]:
    count = s.client.layer_count()
    uints, layers = set(), []
    for number in range(count):
        values = s.client.call(Command.GETLAYERINFO, number, context=f"layer {number}")
        assert not isinstance(values, bytes)
        layers.append(LayerInfo.from_values(values))  # a layout it cannot parse raises: this check fails
        uints.add(len(values.uints))
    s.layers = layers
    unknown = [n for n, layer in enumerate(layers) if layer.type not in set(LayerType)]
    seen = f"{count} layers: {_layer_list(layers)}; {' or '.join(map(str, sorted(uints))) or 'no'} uints each"
    return [_row("Layers (GETNROFLAYERS, GETLAYERINFO)", "every layer's info parses (8 ints, 3 doubles, 7 uints, or 5 "
                 "from VAST before 1.5, a name); types 0-4 (image, annotation, segmentation, tool, segmentation xyz)",
                 seen, bool(count) and not unknown, "warn" if count else "fail")]  # fmt: skip


def check_em_layer(s: _Session) -> list[CheckRow]:
    s.need("layers")
    layers = s.layers
    wanted = s.em_layer if s.em_layer is not None else next(
        (n for n, layer in enumerate(layers) if layer.type == LayerType.IMAGE), 0)  # fmt: skip
    s.em = s.layer_named(wanted, "--em-layer")
    em = layers[s.em]
    return [_row("EM layer", "an 8-bit gray or RGB image layer (1 or 3 bytes per pixel)",
                 f"layer {s.em} {em.name!r}: {_type_name(em.type)}, bytes per pixel: {em.bytes_per_pixel}",
                 em.bytes_per_pixel in (1, 3))]  # fmt: skip


def check_scale_factors(s: _Session) -> list[CheckRow]:
    s.need("info", "em")
    assert s.info is not None and s.em is not None
    factors = s.client.scale_factors(s.em)
    mips = s.info.mips
    shown = factors[:4] + factors[-1:] if len(factors) > 5 else factors
    seen = f"{len(factors)} rows: " + " ".join(f"({x},{y},{z})" for x, y, z in shown[:4])
    seen += f" ... ({','.join(map(str, shown[4]))})" if len(shown) > 4 else ""
    expected = f"{mips} rows (GETINFO's mip count), row m = (2^m, 2^m, 1): x and y halve, z is never scaled"
    wrong_xy = [m for m, (x, y, _) in enumerate(factors[:mips]) if (x, y) != (2**m, 2**m)]
    if wrong_xy:
        return [_row("Mip scale factors (GETMIPMAPSCALEFACTORS)", expected,
                     f"{seen}; mip {wrong_xy[0]} does not halve x and y: membraind's boxes would miss", False)]  # fmt: skip
    scaled_z = [m for m, (_, _, z) in enumerate(factors[:mips]) if z != 1]
    if scaled_z:
        seen += f"; z is scaled from mip {scaled_z[0]}: membraind uses only mips 0..{scaled_z[0] - 1}"
    elif len(factors) < mips:
        seen += f"; fewer rows than mips: membraind uses only mips 0..{len(factors) - 1}"
    return [_row("Mip scale factors (GETMIPMAPSCALEFACTORS)", expected, seen,
                 not scaled_z and len(factors) >= mips, "warn")]  # fmt: skip


def check_em_reads(s: _Session) -> list[CheckRow]:
    s.need("info", "em")
    assert s.info is not None and s.em is not None
    box = s.read_box()
    bpp = s.layers[s.em].bytes_per_pixel
    mip0 = s.client.read_em(s.em, box)  # a byte count that fits neither gray nor RGB raises: this check fails
    where = f"x {box.x0}-{box.x1 - 1}, y {box.y0}-{box.y1 - 1}, z {box.z0}"
    rows = [_row(
        "EM read at mip 0 (GETEMIMAGERAW)", f"{box.voxels * bpp} bytes for {box.shape[2]} x {box.shape[1]} voxels "
        f"({bpp} per voxel, as GETLAYERINFO says)", f"{mip0.nbytes} bytes of {where}, values {mip0.min()}-{mip0.max()}",
        mip0.nbytes == box.voxels * bpp)]  # fmt: skip
    if s.info.mips < 2:
        return rows + [_row("EM read at mip 1", "the 2 x 2 mean of mip 0", "VAST has one mip only: not tried",
                            False, "warn")]  # fmt: skip
    half = box.at_mip(1)
    mip1 = s.client.read_em(s.em, half).astype(np.float32)
    mean, nearest = (np.abs(mip1 - downsample(mip0[0], mode)).mean() for mode in ("mean", "nearest"))
    seen = (f"{half.shape[2]} x {half.shape[1]} voxels differing from the 2 x 2 mean of mip 0 by {mean:.1f} gray "
            f"levels on average (from every 2nd pixel by {nearest:.1f})")  # fmt: skip
    if mean > MIP_TOLERANCE:
        seen += ": VAST's mip 1 is another reduction; membraind's models read mips as 2 x 2 means"
    return rows + [_row("EM read at mip 1", f"the same box at mip 1 (half the pixels), within {MIP_TOLERANCE:g} gray "
                        "levels of the 2 x 2 mean of mip 0", seen, mean <= MIP_TOLERANCE, "warn")]  # fmt: skip


def check_annotation(s: _Session) -> list[CheckRow]:
    s.need("info", "layers")
    c = s.client
    if s.anno_layer is not None:
        layer = s.layer_named(s.anno_layer, "--anno-layer")
    else:
        layer = next((n for n, info in enumerate(s.layers) if info.type == LayerType.ANNOTATION), -1)
        if layer < 0:
            return [_row("Annotation layer", "an annotation layer to read skeletons from",
                         "none (of type 1); name one with --anno-layer to check skeleton reading", False, "warn")]  # fmt: skip
    name = s.layers[layer].name
    with c.api_layer(layer):
        before = c.selected_anno_object()
        table, names = c.anno_objects(), c.anno_object_names()
    skeletons = [row for row in table if row.used and row.type == SKELETON]
    seen = (f"layer {layer} {name!r}: object rows: {len(table)} (skeletons: {len(skeletons)}, deleted slots: "
            f"{sum(not row.used for row in table)}), names: {len(names)}")  # fmt: skip
    rows = [_row("Annotation objects (GETANNOLAYEROBJECTDATA, ...NAMES)", "21 words per object, ids 1..N, the 'used' "
                 "flag in word 0, one name per object", seen, len(names) == len(table))]  # fmt: skip
    if not before:
        return rows + [_row("Skeleton nodes (GETAONODEDATA)", "nodes in mip-0 voxels inside the volume",
                            "not tried: no object is selected in this layer, and reading nodes would leave one "
                            "selected (select any skeleton in VAST and run the check again)", False, "warn")]  # fmt: skip
    read = c.skeletons(layer)  # selects each skeleton in turn, then the user's one again
    with c.api_layer(layer):
        after = c.selected_anno_object()
    assert s.info is not None  # needed above
    nodes = [node for skeleton in read.values() for node in skeleton.nodes]
    outside = [n for n in nodes if not all(0 <= v < size for v, size in zip((n.x, n.y, n.z), s.info.size))]
    rows.append(_row("Skeleton nodes (GETAONODEDATA)", "nodes in mip-0 voxels inside the volume",
                     f"{len(nodes)} nodes in {len(read)} skeletons, {len(outside)} outside the volume"
                     + (f" (first at {outside[0].x}, {outside[0].y}, {outside[0].z})" if outside else ""),
                     not outside))  # fmt: skip
    rows.append(_row("Selected skeleton kept (GETSELECTEDANNOOBJECTNR)", "the same object selected after membraind "
                     "read every skeleton as before", f"object {before} before, object {after} after", before == after))  # fmt: skip
    return rows


def check_load_layer(s: _Session) -> list[CheckRow]:
    """LOADLAYER of a tiny .vsvi, its tiles, a refresh, and REMOVELAYER; the selection is put back."""
    s.need("info", "layers", "start")
    assert s.info is not None and s.start is not None
    c, box = s.client, s.read_box()
    name = f"{TEST_LAYER_PREFIX} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"
    x, y, z = s.info.size
    store = TileStore(s.scratch / "membraind-vast-check", (z, y, x), voxel_size=s.info.voxel_size, layer_name=name,
                      file_stem="membraind-vast-check")  # fmt: skip
    yy, xx = np.mgrid[box.y0 : box.y1, box.x0 : box.x1]
    pattern = ((3 * xx + 5 * yy) % 251).astype(np.uint8)[None]
    store.write_region(box, pattern)
    try:
        path = vast_path(store.write_vsvi(), s.paths)
    except InputError as exc:
        return [_row("LOADLAYER of a generated .vsvi", "a path VAST can open", str(exc), False)]
    selected, count = c.selected_layers().layer, c.layer_count()
    above = f"{selected} {s.layers[selected].name!r}" if 0 <= selected < len(s.layers) else str(selected)
    try:
        number = c.load_layer(path)
    except VastRefused as exc:
        advice = (f"check that VAST sees {describe_path_maps(s.paths)}" if s.paths else
                  "VAST must see membraind's files under the same path: run VAST on this machine, or say where VAST "
                  "sees this machine's folders with --vast-path DAEMON=VAST ([[service.vast]] paths)")  # fmt: skip
        return [_row("LOADLAYER of a generated .vsvi", "VAST opens the file membraind wrote", f"{path}: {exc}. {advice}",
                     False)]  # fmt: skip
    rows: list[CheckRow] = []
    try:
        info = c.layer_info(number)
        after_selected = number == selected + 1
        rows.append(_row(
            "LOADLAYER of a generated .vsvi", f"a new image layer right after the selected layer {above}",
            f"layer {number} ({_type_name(info.type)}) of {c.layer_count()} (were {count}); file {path}"
            + ("" if after_selected else ": not after the selected layer, membraind finds its layers by name anyway"),
            after_selected and info.type == LayerType.IMAGE and c.layer_count() == count + 1, "warn"))  # fmt: skip
        rows.append(_row("Layer name from the .vsvi, in cp1252", f"TargetLayerName {name!r} ('ü' written in cp1252, "
                         "read back through GETLAYERINFO)", repr(info.name), info.name == name))  # fmt: skip
        shown = c.read_em(number, box)
        rows.append(_row("VAST shows the .vsvi's tiles (GETEMIMAGERAW)", "the pattern membraind wrote into its tile",
                         _compare(shown, pattern), np.array_equal(shown, pattern)))  # fmt: skip
        store.write_region(box, 255 - pattern)
        c.refresh_layer_region(number, box)
        shown = c.read_em(number, box)
        rows.append(_row("REFRESHLAYERREGION re-reads changed tiles", "the new pattern after the tile was rewritten",
                         _compare(shown, 255 - pattern, old=pattern), np.array_equal(shown, 255 - pattern)))  # fmt: skip
    except (MembraindError, OSError, ValueError) as exc:  # the layer is closed below all the same
        rows.append(_row(f"The test layer {number}", "answers to reads and a refresh", _why(exc),
                         False))  # fmt: skip
    finally:
        rows.append(_remove(c, name, number, count))
        rows.append(_restore_selection(c, s.start.selected, "LOADLAYER and REMOVELAYER"))
    return rows


def _why(exc: Exception) -> str:
    """An error as a report shows it: membraind's own errors say it all, others get their kind."""
    return str(exc) if isinstance(exc, MembraindError) else f"{type(exc).__name__}: {exc}"


def _compare(shown: np.ndarray, wanted: np.ndarray, old: np.ndarray | None = None) -> str:
    if np.array_equal(shown, wanted):
        return f"all {wanted.size} pixels as written"
    if old is not None and np.array_equal(shown, old):
        return "the old tile: VAST did not re-read it"
    if not shown.any():
        return "black: VAST found no tile (the paths inside the .vsvi?)"
    return f"{int((shown != wanted).sum())} of {wanted.size} pixels differ"


def _remove(c: VastClient, name: str, number: int, count: int) -> CheckRow:
    """Close the test layer (found by name: numbers may have moved); never force a layer with unsaved changes."""
    check, expected = "REMOVELAYER of the test layer", "the test layer closed, as many layers as before"
    try:
        if c.layer_info(number).name != name:
            number = c.find_layer(name)
        c.remove_layer(number, force=False)
    except VastError as exc:
        return _row(check, expected, f"{exc}: close layer {name!r} in VAST by hand", False, "warn")
    return _row(check, expected, f"layer {number} closed, {c.layer_count()} layers", c.layer_count() == count)


def _restore_selection(c: VastClient, before: SelectedLayers, by: str) -> CheckRow:
    now = c.selected_layers()
    check = f"Selected layer after {by}"
    if now == before:
        return _row(check, "the user's selection untouched", f"layer {now.layer}, as before", True)
    c.select_layer(before.layer)
    return _row(check, "the user's selection untouched", f"{by} changed it ({before} -> {now}); selected layer "
                f"{before.layer} again", False, "warn")  # fmt: skip


def check_untouched(s: _Session) -> list[CheckRow]:
    s.need("start")
    assert s.start is not None
    end = s.state()
    changed = [what for what, a, b in (("layer selection", s.start.selected, end.selected), ("view", s.start.view, end.view),
               ("API-layer switch", s.start.api_layers, end.api_layers)) if a != b]  # fmt: skip
    return [_row("User's view and selection", "layer selection, view and API-layer switch as before the check",
                 "changed: " + ", ".join(changed) if changed else f"unchanged (view at {end.view}, layer "
                 f"{end.selected.layer} selected)", not changed)]  # fmt: skip


#: The checks in the order they run; each may rely on what earlier ones stored in the session.
CHECKS: list[tuple[str, Callable[[_Session], list[CheckRow]]]] = [
    ("API version (GETAPIVERSION)", check_api_version),
    ("Volume (GETINFO)", check_volume),
    ("Layers (GETNROFLAYERS, GETLAYERINFO)", check_layers),
    ("EM layer", check_em_layer),
    ("Mip scale factors (GETMIPMAPSCALEFACTORS)", check_scale_factors),
    ("EM reads (GETEMIMAGERAW)", check_em_reads),
    ("Annotation layer", check_annotation),
    ("LOADLAYER of a generated .vsvi", check_load_layer),
    ("User's view and selection", check_untouched),
]


def run_checks(
    client: VastClient, scratch: Path, *, em_layer: int | str | None = None, anno_layer: int | str | None = None,
    paths: list[PathMap] | None = None,
) -> CheckReport:
    """Run every check of :data:`CHECKS` against the VAST behind ``client``.

    ``scratch``: a folder for the tiny ``.vsvi`` and its tile, handed to VAST through the
    path mapping ``paths`` (:mod:`membraind.vast.paths`; none: VAST sees this machine's
    files as they are). Raises :class:`~membraind.vast.client.VastConnectionError` when
    VAST cannot be reached at all.
    """
    client.connect()
    s = _Session(client, em_layer, anno_layer, Path(scratch), list(paths or []))
    rows: list[CheckRow] = []
    try:
        s.start = s.state()
    except VastError as exc:
        rows.append(_row("User's view and selection", "GETSELECTEDLAYERNR, GETVIEWCOORDINATES and GETAPILAYERSENABLED "
                         "answer", str(exc), False))  # fmt: skip
    for title, check in CHECKS:
        try:
            rows += check(s)
        except _NotTried as exc:
            rows.append(_row(title, "an earlier check to pass", str(exc), False))
        except (MembraindError, OSError, ValueError) as exc:  # VAST refused, the wire broke, the scratch folder failed
            rows.append(_row(title, "an answer", _why(exc), False))
    checked_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return CheckReport(vast=client.address, checked_at=checked_at, rows=rows)
