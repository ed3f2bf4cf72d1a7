"""VAST subcommands: ``vast-emulator`` serves a volume over VAST's remote API, to try membraind without VAST;
``vast-check`` checks a running VAST against what membraind expects; ``vast-paint`` and
``vast-ground-truth`` write predictions into VAST and read ground truth from it."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from membraind.commands import Add, add_voxel_size_argument, voxel_size_argument
from membraind.commands.predict import add_anchor_arguments, add_vast_path_argument, path_map_argument
from membraind.config import Settings
from membraind.errors import InputError
from membraind.vast.emulator.commands import EM_NAME, SEGMENTATION_NAME
from membraind.vast.protocol import DEFAULT_PORT


def cmd_vast_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.vast.emulator import VastEmulator

    emulator = VastEmulator(
        args.volume, skeletons=args.skeletons, host=args.host, port=args.port,
        voxel_size=voxel_size_argument(args.voxel_size), em_name=args.em_name, segmentation_name=args.segmentation_name,
        windows_paths=args.windows_path,
    )  # fmt: skip
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        emulator.start()
    except OSError as exc:
        raise InputError(
            f"cannot listen on {args.host}:{args.port} ({exc}); is VAST or another emulator using that port? "
            "Choose another with --port"
        ) from None
    try:
        with emulator:
            print(
                f"VAST emulator on {emulator.address} serving {args.volume} ({', '.join(emulator.layer_names())})",
                flush=True,
            )
            while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("VAST emulator stopped", flush=True)
    return 0


def cmd_vast_check(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from membraind.atomic import write_text_atomic
    from membraind.commands.predict import layer_ref, require_vast
    from membraind.vast.check import run_checks
    from membraind.vast.client import VastClient

    source = require_vast(args.vast, "vast-check checks a running VAST")
    em_layer, anno_layer = (layer_ref(text) if text is not None else None for text in (args.em_layer, args.anno_layer))
    paths = args.vast_path or settings.service.vast_paths(source.host, source.port)
    # The test layer's folder must be one VAST sees: with a mapping, inside its first folder.
    where = None if args.scratch or not paths else paths[0].daemon
    with tempfile.TemporaryDirectory(prefix=".membraind-vast-check-", dir=where) as temporary:
        scratch = args.scratch or Path(temporary)
        with VastClient(source.host, source.port, timeout=args.timeout) as client:
            report = run_checks(client, scratch, em_layer=em_layer, anno_layer=anno_layer, paths=paths)
    print(report.table())
    if args.report:
        write_text_atomic(args.report, report.model_dump_json(indent=2) + "\n")
        print(f"report written to {args.report}: send it along with your question")
    return 1 if report.failed else 0


def cmd_vast_paint(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.commands import run_spec, spec_from_args
    from membraind.commands.predict import anchor_points, layer_ref, parse_box, require_vast
    from membraind.jobs.specs import PaintSpec

    source = require_vast(args.vast, "vast-paint paints into a running VAST")
    if args.box:
        target = {"mode": "box", "box": parse_box(args.box, args.box_mip)}
    else:
        points = anchor_points(args, args.vast)
        if not points:
            raise InputError("say where to paint: --box, or anchors (--anchor, --anchors or --anchor-layer)")
        target = {"mode": "anchors", "points": points, "cube_xy": args.cube_xy, "cube_z": args.cube_z}
    spec = spec_from_args(
        PaintSpec, host=source.host, port=source.port, membrane=args.membrane,
        segmentation_layer=layer_ref(args.segmentation_layer), target=target, mode=args.mode, threshold=args.threshold,
        first_id=args.first_id,
    )  # fmt: skip
    run_spec(spec, settings)
    return 0


def cmd_vast_ground_truth(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.commands.predict import layer_ref, parse_box, require_vast
    from membraind.vast.client import VastClient
    from membraind.vast.groundtruth import export_ground_truth, ground_truth_from_vast
    from membraind.volumes.voxel_size import UNKNOWN

    source = require_vast(args.vast, "vast-ground-truth reads from a running VAST")
    box = parse_box(args.box, args.mip)
    with VastClient(source.host, source.port) as client:
        images = ground_truth_from_vast(
            client, layer_ref(args.em_layer), layer_ref(args.segmentation_layer), box, convention=args.convention
        )
        x, y, z = client.info().voxel_size
    em, labels = export_ground_truth(images, args.out)
    annotated = sum(image.annotated_fraction for image in images) / len(images)
    print(f"{len(images)} sections ({annotated:.0%} of pixels annotated): EM in {em}, labels in {labels}")
    # The PNGs cannot hold VAST's voxel size; the command carries it into the bundle.
    scale = 2**args.mip
    voxel = f" --voxel-size {x * scale:g},{y * scale:g},{z:g}" if (x, y, z) != UNKNOWN else ""
    print(f"train with: membraind train --em {em} --labels {labels} --mapping classes{voxel} --out RUN")
    return 0


def register(add: Add) -> None:
    """Add the VAST subcommands."""
    p = add(
        "vast-emulator",
        cmd_vast_emulator,
        "serve a volume (and skeletons) over VAST's remote API until Ctrl-C, to try membraind without VAST",
    )
    p.add_argument("--volume", type=Path, required=True, help="EM volume: folder of sections, TIFF stack or .vsvi")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--skeletons", type=Path, help="skeleton file (membraind JSON or VAST CSV), re-read when it changes")
    add_voxel_size_argument(p, "(default: the volume's own, else 1,1,1)")
    p.add_argument("--em-name", default=EM_NAME, help=f"name of the EM layer (default {EM_NAME})")
    p.add_argument(
        "--segmentation-name", default=SEGMENTATION_NAME,
        help=f"name of the (empty) segmentation layer (default {SEGMENTATION_NAME})",
    )  # fmt: skip
    p.add_argument(
        "--windows-path", type=path_map_argument, action="append", metavar="FOLDER=WINDOWS",
        help="act as VAST on Windows: LOADLAYER opens only Windows paths, WINDOWS (e.g. Z:\\lab) being FOLDER here "
        "(repeat for several drives or shares)",
    )  # fmt: skip

    p = add(
        "vast-check",
        cmd_vast_check,
        "check that a running VAST behaves as membraind expects, with harmless calls only, and print a report to send back",
    )
    p.add_argument("vast", help="the VAST: vast://HOST:PORT")
    p.add_argument("--em-layer", help="EM layer name or number (default: the first image layer)")
    p.add_argument("--anno-layer", help="annotation layer name or number to read skeletons from (default: the first one)")
    p.add_argument(
        "--scratch", type=Path,
        help="folder for the tiny test layer (.vsvi and one tile); VAST must see it under the same path "
        "(default: a temporary folder, removed afterwards)",
    )  # fmt: skip
    p.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    add_vast_path_argument(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer of VAST (default 30)")

    p = add(
        "vast-paint",
        cmd_vast_paint,
        "paint predicted cells (or membrane) into a VAST segmentation layer around anchors, never over painted voxels",
    )
    p.add_argument("vast", help="the VAST: vast://HOST:PORT")
    p.add_argument("--membrane", type=Path, required=True, help="predicted membrane layer (its store folder or .vsvi)")
    p.add_argument("--segmentation-layer", required=True, help="VAST segmentation layer to paint into, name or number")
    p.add_argument("--mode", choices=("cells", "membrane"), default="cells", help="2D cells (default) or membrane")
    p.add_argument("--threshold", type=float, default=0.5, help="membrane mode: probability above which to paint")
    p.add_argument("--first-id", type=int, default=2, help="first segment id to use (default 2, as mEMbrain)")
    p.add_argument("--box", help="x0,x1,y0,y1,z0,z1: paint this half-open box (instead of anchor cubes)")
    p.add_argument("--box-mip", type=int, default=0, help="mip of the --box coordinates (default 0)")
    add_anchor_arguments(p)

    p = add(
        "vast-ground-truth",
        cmd_vast_ground_truth,
        "read EM and a painted segmentation layer of a box from VAST as training images (em/ and labels/ folders)",
    )
    p.add_argument("vast", help="the VAST: vast://HOST:PORT")
    p.add_argument("--em-layer", default="0", help="EM layer name or number (default 0)")
    p.add_argument("--segmentation-layer", required=True, help="painted segmentation layer, name or number")
    p.add_argument("--box", required=True, help="x0,x1,y0,y1,z0,z1: the half-open box to read")
    p.add_argument("--mip", type=int, default=0, help="mip of the box and of the images (default 0)")
    p.add_argument(
        "--convention", choices=("classes", "instances"), default="classes",
        help="segment ids are classes (1 interior, 2 membrane, 3 third; default) or one segment per cell",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder: em/ and labels/")
