"""VAST subcommands: ``vast-emulator`` serves a volume over VAST's remote API, to try membraind without VAST."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from membraind.commands import Add
from membraind.config import Settings
from membraind.errors import InputError

DEFAULT_PORT = 22081  # VAST's own default, so clients need no --port


def _voxel_size(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise InputError(f"--voxel-size must be three positive numbers X,Y,Z in nm (e.g. 4,4,30), got {text!r}")
    return values  # type: ignore[return-value]


def cmd_vast_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.vast.emulator import VastEmulator

    emulator = VastEmulator(
        args.volume, skeletons=args.skeletons, host=args.host, port=args.port, voxel_size=_voxel_size(args.voxel_size)
    )
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
    p.add_argument("--voxel-size", help="X,Y,Z voxel size in nm (default: the volume's, 1,1,1 for image folders)")
