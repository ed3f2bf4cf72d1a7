"""The ``membraind`` command: one entry point, one subcommand per task.

Each subcommand only parses its arguments and calls library code. Errors meant for the
user (:class:`~membraind.errors.MembraindError`) print as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from membraind import __version__
from membraind.config import Settings, load_settings
from membraind.errors import MembraindError
from membraind.groundtruth.label_mapping import PRESETS, LabelMapping

log = logging.getLogger("membraind")
Command = Callable[[argparse.Namespace, Settings], int]


def _mapping(args: argparse.Namespace, settings: Settings) -> LabelMapping:
    if getattr(args, "mapping", None):
        return LabelMapping.preset(args.mapping)
    return settings.groundtruth.mapping()


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.demo.pipeline import run_demo

    run_demo(args.out, settings, seed=args.seed)
    return 0


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.demo.synthetic_em import generate_stack, write_stack

    stack = generate_stack(seed=args.seed, sections=args.sections, shape=(args.size, args.size))
    for kind, folder in write_stack(stack, args.out).items():
        print(f"{kind:10s} {folder}")
    return 0


def cmd_convert_instances(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.convert import convert_instances

    gt = settings.groundtruth
    thickness = args.thickness if args.thickness is not None else gt.membrane_thickness
    fill_ecs = args.fill_ecs if args.fill_ecs is not None else gt.fill_ecs
    written = convert_instances(args.source, args.target, thickness, fill_ecs)
    print(f"wrote {len(written)} membrane label image(s) to {args.target} (0 unannotated, 1 interior, 2 membrane)")
    return 0


def cmd_convert_skeleton(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.convert import convert_skeletons

    radius = args.tube_radius if args.tube_radius is not None else settings.groundtruth.skeleton_tube_radius
    written = convert_skeletons(args.source, args.target, _mapping(args, settings), radius)
    print(f"wrote {len(written)} skeleton label image(s) to {args.target} (0 unannotated, 1 background, 2 backbone)")
    return 0


def cmd_inspect_gt(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.pairs import load_ground_truth

    images = load_ground_truth(args.em, args.labels, _mapping(args, settings))
    print(f"{'section':24s} {'size':>11s} {'annotated':>10s} {'membrane':>9s}")
    for gt in images:
        size = f"{gt.em.shape[1]}x{gt.em.shape[0]}"
        print(f"{gt.name:24s} {size:>11s} {gt.annotated_fraction:>9.1%} {gt.membrane_fraction:>9.1%}")
    print(f"{len(images)} pair(s) OK")
    return 0


def cmd_preview_patches(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.groundtruth.preview import contact_sheet, export_patches
    from membraind.groundtruth.sampler import PatchSampler
    from membraind.volumes.image_files import write_image

    images = load_ground_truth(args.em, args.labels, _mapping(args, settings))
    norm = settings.normalization.fit([gt.em for gt in images])
    sampler = PatchSampler(
        images,
        args.patch_size or settings.sampler.patch_size,
        norm,
        settings.augmentation,
        settings.sampler.angle_step,
        seed=settings.sampler.seed if args.seed is None else args.seed,
    )
    patches = [sampler.sample() for _ in range(args.count)]
    write_image(args.out, contact_sheet(patches, args.columns))
    print(f"contact sheet of {len(patches)} patches: {args.out}")
    if args.export:
        classes = 3 if any((gt.labels == 3).any() for gt in images) else 2
        em_dir, label_dir = export_patches(patches, [gt.name for gt in images], args.export, classes)
        print(f"patches written to {em_dir} and {label_dir}")
    return 0


def cmd_show_config(args: argparse.Namespace, settings: Settings) -> int:
    print(settings.model_dump_json(indent=2))
    return 0


def _add_mapping(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mapping",
        choices=sorted(PRESETS),
        help="label gray values -> classes (default: [groundtruth] label_mapping of the config)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="membraind",
        description="Membrane segmentation for connectomics: ground truth, training, prediction, VAST.",
    )
    parser.add_argument("--version", action="version", version=f"membraind {__version__}")
    parser.add_argument("--config", type=Path, help="TOML configuration file (default: $MEMBRAIND_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("demo", cmd_demo, "run the ground-truth pipeline end to end on generated demo EM data")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")

    p = add("demo-data", cmd_demo_data, "generate synthetic EM sections with exact instance and membrane labels")
    p.add_argument("out", type=Path, help="output folder (gets em/, instances/, labels/)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sections", type=int, default=8, help="number of sections (default: 8)")
    p.add_argument("--size", type=int, default=512, help="section width and height in pixels (default: 512)")

    p = add("convert-instances", cmd_convert_instances, "turn instance labels (one id per cell) into membrane labels")
    p.add_argument("source", type=Path, help="folder of instance label images (gray ids or RGB) or a TIFF stack")
    p.add_argument("target", type=Path, help="output folder for membrane labels")
    p.add_argument("--thickness", type=int, help="membrane thickness in pixels (default: config, 3)")
    p.add_argument(
        "--fill-ecs",
        action=argparse.BooleanOptionalAction,
        help="id 0 (extracellular space) becomes membrane; without it, it stays unannotated",
    )

    p = add("convert-skeleton", cmd_convert_skeleton, "turn membrane labels into skeleton (backbone) labels")
    p.add_argument("source", type=Path, help="folder of membrane label images or a TIFF stack")
    p.add_argument("target", type=Path, help="output folder for skeleton labels")
    p.add_argument("--tube-radius", type=float, help="backbone tube radius in pixels (default: config, 4)")
    _add_mapping(p)

    p = add("inspect-gt", cmd_inspect_gt, "check EM/label pairs and report annotated and membrane fractions")
    p.add_argument("--em", type=Path, required=True, help="folder of EM images or a TIFF stack")
    p.add_argument("--labels", type=Path, required=True, help="folder of label images or a TIFF stack")
    _add_mapping(p)

    p = add("preview-patches", cmd_preview_patches, "draw training patches and save a contact sheet with labels")
    p.add_argument("--em", type=Path, required=True, help="folder of EM images or a TIFF stack")
    p.add_argument("--labels", type=Path, required=True, help="folder of label images or a TIFF stack")
    _add_mapping(p)
    p.add_argument("--patch-size", type=int, help="patch side in pixels (default: config, 256)")
    p.add_argument("--count", type=int, default=32, help="number of patches (default: 32)")
    p.add_argument("--columns", type=int, default=8, help="patches per row of the sheet (default: 8)")
    p.add_argument("--seed", type=int, help="sampling seed (default: config)")
    p.add_argument("--out", type=Path, default=Path("patches.png"), help="contact sheet PNG (default: patches.png)")
    p.add_argument("--export", type=Path, help="also write the patches as PNG files into this folder")

    add("show-config", cmd_show_config, "print the effective configuration (file + environment + defaults)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.config)
        return args.func(args, settings)
    except MembraindError as exc:
        print(f"membraind: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("membraind: interrupted", file=sys.stderr)
        return 130
