"""Ground-truth subcommands: inspect-gt, convert-instances, convert-skeleton, preview-patches."""

from __future__ import annotations

import argparse
from pathlib import Path

from membraind.commands import Add, add_ground_truth_arguments, add_mapping_argument, mapping_from
from membraind.config import Settings


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
    written = convert_skeletons(args.source, args.target, mapping_from(args, settings.groundtruth), radius)
    print(f"wrote {len(written)} skeleton label image(s) to {args.target} (0 unannotated, 1 background, 2 backbone)")
    return 0


def cmd_inspect_gt(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.pairs import load_ground_truth

    images = load_ground_truth(args.em, args.labels, mapping_from(args, settings.groundtruth))  # logs the warnings
    # Two heading lines: what each share is a share of.
    print(f"{'section':24s} {'size':>11s} {'annotated':>10s} {'membrane':>13s}")
    print(f"{'':24s} {'':>11s} {'of pixels':>10s} {'of annotated':>13s}")
    for gt in images:
        size = f"{gt.em.shape[1]}x{gt.em.shape[0]}"
        flag = "  <- see warning" if gt.warning else ""
        print(f"{gt.name:24s} {size:>11s} {gt.annotated_fraction:>10.1%} {gt.membrane_fraction:>13.1%}{flag}")
    warned = sum(gt.warning is not None for gt in images)
    if warned:
        print(f"{len(images)} pair(s) read; {warned} with too much membrane to be right: see the warnings")
    else:
        print(f"{len(images)} pair(s) OK")
    if args.preview:
        from membraind.groundtruth.preview import write_section_overlays

        written = write_section_overlays(images, args.preview, settings.normalization.fit([gt.em for gt in images]))
        print(f"labels drawn over the EM, one picture per section: {args.preview}/<section>_overlay.png ({len(written)})")
    return 0


def cmd_preview_patches(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.groundtruth.preview import contact_sheet, export_patches, sample_patches
    from membraind.groundtruth.sampler import patch_size_note
    from membraind.volumes.image_files import write_image

    images = load_ground_truth(args.em, args.labels, mapping_from(args, settings.groundtruth))
    patches, sampler = sample_patches(
        images, settings.normalization, settings.sampler, settings.augmentation, settings.unet.multiple, args.count,
        args.patch_size, args.seed, unpainted=settings.training.unpainted,
    )  # fmt: skip
    write_image(args.out, contact_sheet(patches, args.columns))
    print(f"contact sheet of {len(patches)} patches ({patch_size_note(sampler)}): {args.out}")
    if args.export:
        classes = 3 if any((gt.labels == 3).any() for gt in images) else 2
        em_dir, label_dir = export_patches(patches, [gt.name for gt in images], args.export, classes)
        print(f"patches written to {em_dir} and {label_dir}")
    return 0


def register(add: Add) -> None:
    """Add the ground-truth subcommands."""
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
    add_mapping_argument(p)

    p = add("inspect-gt", cmd_inspect_gt, "check EM/label pairs and report the annotated share of each section and the membrane share of its annotated pixels")
    add_ground_truth_arguments(p)
    p.add_argument(
        "--preview", type=Path, metavar="DIR",
        help="also write DIR/<section>_overlay.png: the labels in colour over the EM (membrane magenta, interior green)",
    )  # fmt: skip

    p = add("preview-patches", cmd_preview_patches, "draw training patches and save a contact sheet with labels")
    add_ground_truth_arguments(p)
    p.add_argument("--patch-size", type=int, help="patch side in pixels (default: config, else chosen from the painted regions as training does)")
    p.add_argument("--count", type=int, default=32, help="number of patches (default: 32)")
    p.add_argument("--columns", type=int, default=8, help="patches per row of the sheet (default: 8)")
    p.add_argument("--seed", type=int, help="sampling seed (default: config)")
    p.add_argument("--out", type=Path, default=Path("patches.png"), help="contact sheet PNG (default: patches.png)")
    p.add_argument("--export", type=Path, help="also write the patches as PNG files into this folder")
