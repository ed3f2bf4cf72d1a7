"""EM read throughput through the VAST protocol (emulator on loopback) vs straight from disk.

Builds a tile store of ``--sections`` 2048 x 2048 sections from ISBI (1024 px PNG tiles,
as membraind and VAST exports lay them out), then reads every section twice over:

- disk: the tile store read directly (PNG decoding included);
- vast: the same tile store served by ``membraind vast-emulator``'s server in this
  process, read with the client in VAST-cube-deep chunks over TCP on 127.0.0.1.

Each pass opens fresh readers, so neither side serves decoded tiles from a cache the
other did not have. Megabytes are bytes of 8-bit EM delivered to the caller.

    python benchmarks/vast_read.py [--sections 16] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import DEFAULT_ISBI, build_volume  # noqa: E402

from membraind.vast.client import VastClient  # noqa: E402
from membraind.vast.emulator import VastEmulator  # noqa: E402
from membraind.vast.volume import VastVolume  # noqa: E402
from membraind.volumes.open_volume import open_volume  # noqa: E402
from membraind.volumes.tile_store import TileStore  # noqa: E402


def build_store(isbi: Path, out: Path, sections: int) -> Path:
    """A gray tile store of 2048 x 2048 sections (2 x 2 mosaics of the 1024 px ISBI mosaics)."""
    mosaics = open_volume(build_volume(isbi, out / "sections", sections + 3))
    store = TileStore(out / "store", (sections, 2048, 2048), layer_name="em")
    for z in range(sections):
        a, b, c, d = (mosaics.read(mosaics.bounds(0).section(z + k))[0] for k in range(4))
        store.write_region(store.bounds(0).section(z), np.block([[a, b], [c, d]])[None])
    return store.write_vsvi()


def read_all(volume, sections: int) -> tuple[float, int]:
    started, total = time.perf_counter(), 0
    for z in range(sections):
        total += volume.read(volume.bounds(0).section(z)).nbytes
    return time.perf_counter() - started, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--sections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vast-read-") as tmp:
        vsvi = build_store(args.isbi, Path(tmp), args.sections)
        rates: dict[str, list[float]] = {"disk": [], "vast": []}
        for _ in range(args.repeat):
            seconds, size = read_all(open_volume(vsvi), args.sections)
            rates["disk"].append(size / seconds / 1e6)
            emulator = VastEmulator(open_volume(vsvi), port=0)
            emulator.start()
            try:
                with VastClient("127.0.0.1", emulator.port) as client:
                    seconds, size = read_all(VastVolume(client, 0), args.sections)
                    rates["vast"].append(size / seconds / 1e6)
            finally:
                emulator.stop()
    disk, vast = max(rates["disk"]), max(rates["vast"])
    print(f"{args.sections} sections of 2048 x 2048, 8-bit, 1024 px PNG tiles; best of {args.repeat}")
    print(f"{'path':40s} {'MB/s':>8s}")
    print(f"{'disk (tile store, PNG decode)':40s} {disk:8.1f}")
    print(f"{'VAST protocol (emulator, loopback TCP)':40s} {vast:8.1f}")
    print(f"VAST / disk: {vast / disk:.2f}")
    print(f"RESULT vast_mb_s={vast:.1f} disk_mb_s={disk:.1f}")


if __name__ == "__main__":
    main()
