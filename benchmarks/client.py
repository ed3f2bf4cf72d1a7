"""Submissions per second through ``membraind_client.Client`` against a running daemon.

Starts ``membraind serve`` (as systemd would) on a temporary home, then keeps both
engine processes busy with one job each and stops them (SIGSTOP), so that every job
submitted afterwards only enters the queue: what is timed is the client's request, the
daemon's validation, its journal row (SQLite, fsync) and its Huey enqueue, and the
reply. Measured for one client submitting in turn and for ``--clients`` clients at once,
over TCP on loopback and over an ipc socket.

    python benchmarks/client.py [--jobs 1000] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def submit_many(endpoint: str, events: str, spec: dict, count: int, prefix: str) -> None:
    from membraind_client import Client

    with Client(endpoint, events=events, timeout=30.0, retries=1) as client:
        for i in range(count):
            reply = client.submit(spec, job_id=f"{prefix}-{i}")
            assert reply.created, reply


def rate(endpoint: str, events: str, spec: dict, jobs: int, clients: int, tag: str) -> float:
    """Jobs per second submitted by ``clients`` clients at once, ``jobs`` in all."""
    per_client = jobs // clients
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        futures = [pool.submit(submit_many, endpoint, events, spec, per_client, f"{tag}-{c}") for c in range(clients)]
        for future in futures:
            future.result()  # a failed submission fails the benchmark
        return per_client * clients / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isbi", type=Path, default=Path(os.environ.get("ISBI2012_DIR", DEFAULT_ISBI)))
    parser.add_argument("--jobs", type=int, default=1000, help="submissions per measurement")
    parser.add_argument("--clients", type=int, default=4, help="clients submitting at once in the parallel case")
    args = parser.parse_args()

    from membraind_client import Client

    from membraind.daemon_toml import write_daemon_toml
    from membraind.harness import SupervisedDaemon, wait_until

    isbi = args.isbi.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="membraind-bench-client-"))
    home = tmp / "home"
    endpoints = {"ipc": (f"ipc://{tmp}/api.sock", f"ipc://{tmp}/events.sock"),
                 "tcp": ("tcp://127.0.0.1:5591", "tcp://127.0.0.1:5592")}  # fmt: skip
    rows = []
    for transport, (endpoint, events) in endpoints.items():
        config = write_daemon_toml(tmp / f"membraind-{transport}.toml", {
            "service": {"home": f"{home}-{transport}", "roots": [isbi, tmp], "api": {"endpoint": endpoint, "events": events}},
        })  # fmt: skip
        with SupervisedDaemon(config, tmp / f"daemon-{transport}.log") as daemon:
            with Client(endpoint, events=events, timeout=30.0) as client:
                # occupy both engines, then freeze them: later jobs stay queued
                busy = {"kind": "segment2d", "membrane": str(isbi / "train" / "label"), "out": str(tmp / f"seg-{transport}")}
                client.submit(busy, job_id="busy-cpu")
                client.submit({"kind": "predict", "volume": str(isbi / "test" / "image"), "bundles": [str(isbi)],
                               "out": str(tmp / "p"), "target": {"mode": "volume"}}, job_id="busy-gpu")  # fmt: skip
                wait_until(lambda: all(client.status(j).state != "queued" for j in ("busy-cpu", "busy-gpu")), 120,
                           what="both engines to take a job")  # fmt: skip
                for pid in daemon.engines():
                    os.kill(pid, signal.SIGSTOP)
                spec = {"kind": "predict", "volume": str(isbi / "test" / "image" / "00.png"), "bundles": [str(isbi)],
                        "out": str(tmp / "queued"), "target": {"mode": "image"}}  # fmt: skip
                rate(endpoint, events, spec, 50, 1, f"warmup-{transport}")
                one = rate(endpoint, events, spec, args.jobs, 1, f"one-{transport}")
                many = rate(endpoint, events, spec, args.jobs, args.clients, f"many-{transport}")
                counts = client.list(limit=1).counts
            for pid in daemon.engines():  # before the daemon goes: stopped orphans could not exit
                os.kill(pid, signal.SIGCONT)
            rows.append((transport, one, many, counts.get("queued", 0)))

    print(f"\nsubmissions through membraind_client.Client ({args.jobs} jobs per run, jobs only enter the queue)\n")
    print(f"{'transport':10s} {'1 client':>12s} {f'{args.clients} clients':>12s} {'queued':>8s}")
    for transport, one, many, queued in rows:
        print(f"{transport:10s} {one:10.0f}/s {many:10.0f}/s {queued:8d}")
    tcp = rows[1]
    print(f"\ntarget: >= 200 submissions per second (one client, TCP): {'met' if tcp[1] >= 200 else 'NOT met'}")
    print(f"RESULT submit_per_s={tcp[1]:.1f} submit_per_s_parallel={tcp[2]:.1f} submit_per_s_ipc={rows[0][1]:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
