"""2D instance segmentation subcommand: membrane probability -> VAST segmentation layer + label TIFF."""

from __future__ import annotations

import argparse
from pathlib import Path

from membraind.commands import Add, run_spec, spec_from_args
from membraind.config import Settings
from membraind.errors import InputError


def _sections(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    first, _, last = text.partition("-")
    try:
        start, stop = int(first), int(last or first)
    except ValueError:
        start, stop = 0, -1
    if stop < start or start < 0:
        raise InputError(f"--sections must be FIRST-LAST or one section number (e.g. 0-99), got {text!r}")
    return start, stop


def cmd_segment2d(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.commands.predict import parse_box, require_vast
    from membraind.jobs.specs import Segment2DSpec

    vast = None
    if args.vast:
        source = require_vast(args.vast, "--vast names the VAST to show the cells in")
        vast = {"host": source.host, "port": source.port, "layer_name": args.vast_layer}
    elif args.vast_layer:
        raise InputError("--vast-layer names a layer of the VAST given with --vast vast://HOST:PORT; give that too")
    spec = spec_from_args(
        Segment2DSpec, membrane=args.membrane, out=args.out, mip=args.mip, sections=_sections(args.sections),
        box=parse_box(args.box, args.box_mip) if args.box else None, show_in_vast=vast,
        h=args.h, sigma=args.sigma, min_size=args.min_size, membrane_threshold=args.threshold,
        overwrite=args.overwrite, label_tiff=not args.no_tiff, preview=not args.no_preview, em=args.em,
    )  # fmt: skip
    run_spec(spec, settings)
    return 0


def register(add: Add) -> None:
    """Add the 2D segmentation subcommand."""
    p = add(
        "segment2d",
        cmd_segment2d,
        "cut each section of a membrane-probability volume into cells (watershed) for VAST and other tools",
    )
    p.add_argument("membrane", type=Path, help="membrane probability: a predicted layer's .vsvi or folder, or images")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder: segmentation/ tiles, labels.tif, preview/, segment2d.json"
    )
    p.add_argument("--mip", type=int, help="mip level of the membrane volume to segment (default: the first holding data, "
                                            "the mip a layer was predicted at)")
    p.add_argument("--sections", help="FIRST-LAST: only these sections (default all)")
    p.add_argument("--box", help="x0,x1,y0,y1,z0,z1: segment only this half-open box (e.g. the one predicted)")
    p.add_argument("--box-mip", type=int, default=0, help="mip of --box coordinates (default 0)")
    p.add_argument("--vast", help="vast://HOST:PORT: also show the cells there, as a segmentation layer of their own")
    p.add_argument("--vast-layer", help="name of that layer (default: the --out folder's name); run again to refresh it")
    p.add_argument("--h", type=float, help="h-minima depth: larger merges more, smaller splits more (default: config)")
    p.add_argument("--sigma", type=float, help="smoothing before seeding, pixels (default: config)")
    p.add_argument("--min-size", type=int, help="smallest segment in pixels (default: config)")
    p.add_argument("--threshold", type=float, help="membrane probability above which pixels are boundary (default: config)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming a segmentation in --out")
    p.add_argument("--no-tiff", action="store_true", help="write only the VAST tiles, not the label TIFF")
    p.add_argument(
        "--em", type=Path,
        help="the EM the membrane was predicted from: the previews in OUT/preview/ show the cells over it "
        "(default: over the membrane probability)",
    )  # fmt: skip
    p.add_argument("--no-preview", action="store_true", help="do not write OUT/preview/section_<z>.png")
