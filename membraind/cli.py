"""The ``membraind`` command: one entry point, one subcommand per task.

Subcommands live in :mod:`membraind.commands`. Errors meant for the user
(:class:`~membraind.errors.MembraindError`) print as one line, exit status 2. Output
into a pipe whose reader has gone ends quietly with status 141, as for Unix tools.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from membraind import __version__
from membraind.commands import Command, demo, groundtruth, predict, segment, service, training, vast
from membraind.config import Settings, load_settings
from membraind.errors import Cancelled, MembraindError

AREAS = (demo, groundtruth, training, predict, segment, vast, service)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a process ended by SIGPIPE


def cmd_show_config(args: argparse.Namespace, settings: Settings) -> int:
    print(settings.model_dump_json(indent=2))
    return 0


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

    for area in AREAS:
        area.register(add)
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
        status = args.func(args, settings)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at interpreter exit
        return status
    except (MembraindError, Cancelled) as exc:  # Cancelled: said as before it stood apart from the errors
        print(f"membraind: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("membraind: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`membraind status | head -1`): stop quietly, as Unix tools do.
        # Python's final flush of what is still buffered would fail again, so it goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
