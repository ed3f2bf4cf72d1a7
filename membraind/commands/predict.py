"""Prediction subcommand: apply model bundles to a volume, a box, anchors or one image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from membraind.commands import Add, add_voxel_size_argument, run_spec, spec_from_args, voxel_size_argument
from membraind.config import Settings
from membraind.errors import InputError, describe_validation_error
from membraind.predict.request import VastSource
from membraind.vast.paths import PathMap, parse_path_map
from membraind.volumes.box import Box

_IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def _ints(text: str, count: int, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise InputError(f"{what} must be {count} comma-separated integers, got {text!r}")
    return values


def parse_box(text: str, mip: int) -> Box:
    """``x0,x1,y0,y1,z0,z1`` (half-open) at ``mip`` as a box, or an error saying how to write it."""
    x0, x1, y0, y1, z0, z1 = _ints(text, 6, "--box")
    try:
        return Box(x0=x0, x1=x1, y0=y0, y1=y1, z0=z0, z1=z1, mip=mip)
    except ValidationError as exc:
        raise InputError(f"--box {text!r}: {describe_validation_error(exc)}") from None


def _anchors(args: argparse.Namespace) -> list[dict]:
    points = [dict(zip("xyz", _ints(a, 3, "--anchor"))) for a in args.anchor or []]
    if args.anchors:
        try:
            loaded = json.loads(Path(args.anchors).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read anchors file {args.anchors} ({exc}); expected JSON [[x, y, z], ...]") from None
        points += [p if isinstance(p, dict) else dict(zip("xyz", p)) for p in loaded]
    return points


def layer_anchors(source_text: str, layer_names: list[str] | None) -> list[dict]:
    """Every skeleton node of the annotation layers ``layer_names`` of the VAST at ``source_text``."""
    if not layer_names:
        return []
    source = require_vast(source_text, "--anchor-layer reads skeletons from VAST")
    from membraind.vast.anchors import AnchorPoller
    from membraind.vast.client import VastClient

    with VastClient(source.host, source.port) as client:
        anchors = AnchorPoller(client, layer_names).poll()
    if not anchors:
        raise InputError(f"annotation layers {', '.join(layer_names)} hold no skeleton nodes; nothing to do")
    return [a.model_dump() for a in anchors]


def anchor_points(args: argparse.Namespace, source_text: str) -> list[dict]:
    """Anchors from ``--anchor``, ``--anchors`` and ``--anchor-layer`` (read from the VAST at ``source_text``)."""
    return _anchors(args) + layer_anchors(source_text, args.anchor_layer)


def add_anchor_arguments(p: argparse.ArgumentParser) -> None:
    """``--anchor``, ``--anchors``, ``--anchor-layer``, ``--cube-xy``, ``--cube-z``."""
    p.add_argument("--anchor", action="append", help="x,y,z (mip 0): a cube around it (repeatable)")
    p.add_argument("--anchors", type=Path, help="JSON file of anchor points [[x, y, z], ...] (mip 0)")
    p.add_argument("--anchor-layer", action="append", help="VAST source: every skeleton node of this annotation layer")
    p.add_argument("--cube-xy", type=int, default=1024, help="anchor cube side in mip-0 pixels (default 1024)")
    p.add_argument("--cube-z", type=int, default=16, help="anchor cube depth in sections (default 16)")


def _target(args: argparse.Namespace) -> dict:
    if args.box:
        return {"mode": "box", "box": parse_box(args.box, args.box_mip)}
    points = anchor_points(args, args.volume)
    if points:
        return {"mode": "anchors", "points": points, "cube_xy": args.cube_xy, "cube_z": args.cube_z}
    path = Path(args.volume)
    if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES and _single_page(path):
        return {"mode": "image", "root": args.image_root}
    return {"mode": "volume"}


def _single_page(path: Path) -> bool:
    if path.suffix.lower() == ".png":
        return True
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return len(tif.pages) == 1


def vast_source(text: str) -> Path | VastSource:
    """A path, or ``vast://HOST:PORT/LAYER`` (layer number or name) for a live VAST."""
    if not text.startswith("vast://"):
        return Path(text)
    address, _, layer = text[len("vast://") :].partition("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"{text!r}: write a VAST source as vast://HOST:PORT[/LAYER], e.g. vast://127.0.0.1:22081/EM")
    try:
        return VastSource(host=host, port=int(port), layer=layer_ref(layer or "0"))
    except ValidationError as exc:
        raise InputError(f"{text!r}: {describe_validation_error(exc)}") from None


def require_vast(text: str, why: str) -> VastSource:
    """The VAST that ``text`` names; an error saying ``why`` a VAST is needed when it names a path."""
    source = vast_source(text)
    if not isinstance(source, VastSource):
        raise InputError(f"{why}: write it as vast://HOST:PORT, e.g. vast://127.0.0.1:22081 (got {text!r})")
    return source


def add_vast_path_argument(p: argparse.ArgumentParser) -> None:
    """``--vast-path DAEMON=VAST`` (repeatable): where a VAST on another machine sees this machine's folders."""
    p.add_argument(
        "--vast-path", type=path_map_argument, action="append", metavar="DAEMON=VAST",
        help="where VAST sees a folder of this machine, e.g. /data/lab=Z:\\lab (repeat for several; "
        "default: [[service.vast]] paths of that VAST in the config)",
    )  # fmt: skip


def path_map_argument(text: str) -> PathMap:
    """argparse type of a ``DAEMON=VAST`` path mapping."""
    try:
        return parse_path_map(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def layer_ref(text: str) -> int | str:
    """A VAST layer given on the command line: its number when all digits, else its name."""
    return int(text) if text.isdigit() else text


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.jobs.specs import PredictSpec
    from membraind.service.paths import check_vast_paths

    volume = vast_source(args.volume)
    if args.vast_path and isinstance(volume, VastSource):
        volume = volume.model_copy(update={"paths": args.vast_path})
    spec = spec_from_args(
        PredictSpec, volume=volume, bundles=args.bundle, models=args.model, out=args.out, target=_target(args),
        mip=args.mip, voxel_size_nm=voxel_size_argument(args.voxel_size), engine=args.runtime, device=args.device,
        overwrite=args.overwrite, outputs=args.outputs.split(",") if args.outputs else None,
        show_in_vast=not args.no_vast_layer,
    )  # fmt: skip
    check_vast_paths(spec, settings.service.vast_paths)  # before any work, as the daemon checks at submit
    run_spec(spec, settings)
    return 0


def register(add: Add) -> None:
    """Add the prediction subcommand."""
    p = add("predict", cmd_predict, "predict membranes with model bundles over a volume, a box, anchors or one image")
    p.add_argument(
        "volume", help="folder of sections, TIFF stack, .vsvi, one image file, or vast://HOST:PORT/LAYER (a live VAST)"
    )
    p.add_argument("--bundle", type=Path, action="append", default=[], help="model bundle (repeat for several)")
    p.add_argument("--model", action="append", default=[], metavar="NAME[@vN]",
                   help="a lab model from the models folder: its latest version, or @vN (repeat for several)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder (<out>/<bundle>/<kind>/)")
    p.add_argument("--mip", type=int, help="mip level to predict at (default: the bundle's)")
    add_voxel_size_argument(p, "written into the outputs' .vsvi (default: the source's own, else the bundle's)")
    p.add_argument("--box", help="x0,x1,y0,y1,z0,z1: predict the tiles touching this half-open box")
    p.add_argument("--box-mip", type=int, default=0, help="mip of the --box coordinates (default 0)")
    add_anchor_arguments(p)
    p.add_argument("--image-root", type=Path, help="single image: the watched folder its output path mirrors")
    p.add_argument("--runtime", "--engine", dest="runtime", choices=("auto", "torch", "onnx"),
                   help="inference runtime (default: config; --engine is its old name)")  # fmt: skip
    p.add_argument("--device", help="auto, cpu, cuda, ... (default: config)")
    p.add_argument("--outputs", help="comma list of membrane, classes, rgb (default: config)")
    p.add_argument(
        "--no-vast-layer", action="store_true", help="VAST source: do not load the results into VAST as layers"
    )
    add_vast_path_argument(p)
    p.add_argument("--overwrite", action="store_true", help="recompute tiles whose outputs are already up to date")
