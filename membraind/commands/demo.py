"""Demo subcommands: demo (the main job on embedded defaults) and demo-data."""

from __future__ import annotations

import argparse
from pathlib import Path

from membraind.commands import Add
from membraind.config import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.demo.service_demo import run_service_demo

    records = run_service_demo(args.out, settings, minutes=args.minutes, seed=args.seed)
    return 0 if all(r.state == "done" for r in records) else 1


def cmd_demo_groundtruth(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.demo.pipeline import run_demo

    run_demo(args.out, settings, seed=args.seed)
    return 0


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.demo.synthetic_em import generate_stack, write_stack

    stack = generate_stack(seed=args.seed, sections=args.sections, shape=(args.size, args.size))
    for kind, folder in write_stack(stack, args.out).items():
        print(f"{kind:10s} {folder}")
    return 0


def register(add: Add) -> None:
    """Add the demo subcommands."""
    p = add("demo", cmd_demo, "the service end to end on generated EM: daemon, training request, scope tiles, box request")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder, replaced (default: demo-output)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")
    p.add_argument("--minutes", type=float, default=1.0, help="training budget in minutes (default: 1)")

    p = add("demo-groundtruth", cmd_demo_groundtruth, "run the ground-truth pipeline alone on generated demo EM data")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")

    p = add("demo-data", cmd_demo_data, "generate synthetic EM sections with exact instance and membrane labels")
    p.add_argument("out", type=Path, help="output folder (gets em/, instances/, labels/)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sections", type=int, default=8, help="number of sections (default: 8)")
    p.add_argument("--size", type=int, default=512, help="section width and height in pixels (default: 512)")
