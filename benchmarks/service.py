"""The daemon's own overhead: request pickup, idle CPU, and at-the-scope latency.

Starts ``membraind serve`` as systemd would (READY over ``$NOTIFY_SOCKET``) on a
temporary home with a small network trained on ISBI (or ``--bundle``), then measures:

- pickup: a request file renamed into the request folder -> its job marked running
  (journal), on an idle daemon, over ``--requests`` requests;
- idle CPU: CPU time of the daemon and its engine processes over ``--idle`` seconds
  with nothing to do, as a percentage of one core;
- scope overhead: an ISBI section renamed into the scope folder -> its prediction file
  written, minus the engine's own time for the job, p50 and p95 over ``--tiles``
  tiles (one at a time, so no queueing is counted).

    python benchmarks/service.py [--tiles 50] [--requests 10] [--idle 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
TICKS = os.sysconf("SC_CLK_TCK")


def train_small_bundle(isbi: Path, out: Path) -> Path:
    """A depth-4, 8-filter U-Net trained for a minute's fraction on ISBI 0-9 (speed is what matters)."""
    from membraind.groundtruth.label_mapping import LabelMapping
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.groundtruth.settings import SamplerSettings
    from membraind.groundtruth.training_data import TrainingData
    from membraind.nn.settings import TrainingSettings, UNetConfig
    from membraind.nn.training_setup import build_trainer

    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    training = TrainingSettings(epochs=2, steps_per_epoch=10, batch_size=8, device="cpu", seed=1)
    return build_trainer(
        out / "run", TrainingData(images[:10], images[10:11]), training, unet=UNetConfig(depth=4, base_filters=8),
        sampler=SamplerSettings(patch_size=128), name="bench",
    ).run()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def wait_for(predicate):
    """Poll finely: the waits measured here are tenths of a second."""
    from membraind.harness import wait_until

    return wait_until(predicate, 120.0, interval=0.005)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isbi", type=Path, default=Path(os.environ.get("ISBI2012_DIR", DEFAULT_ISBI)))
    parser.add_argument("--bundle", type=Path, help="model bundle (default: train a small one)")
    parser.add_argument("--tiles", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from membraind.daemon_toml import ipc_api, write_daemon_toml
    from membraind.service.journal import SqliteJournal
    from membraind.harness import SupervisedDaemon

    tmp = Path(tempfile.mkdtemp(prefix="membraind-bench-service-"))
    try:
        bundle = args.bundle or train_small_bundle(args.isbi, tmp / "train")
        home = tmp / "home"
        config = write_daemon_toml(tmp / "membraind.toml", {
            "service": {
                "home": home, "roots": [bundle.resolve().parent, args.isbi.resolve()], "api": ipc_api(tmp),
                "scope": [{"folder": home / "scope", "out": home / "scope-out", "bundles": [bundle.resolve()]}],
            },
            "predict": {"device": args.device},
        })  # fmt: skip
        sections = sorted((args.isbi / "test" / "image").glob("*.png"))
        daemon = SupervisedDaemon(config, tmp / "daemon.log").start()
        journal = SqliteJournal(home / "state" / "journal.db")
        try:
            # Warm-up: the first job loads the bundle into the engine (kept for the next ones).
            scope = home / "scope"
            tile = scope / "warmup.png"
            shutil.copy(sections[0], tile)
            wait_for(lambda: any(r.state == "done" for r in journal.list()))

            pickups = []
            requests = home / "requests"
            for i in range(args.requests):
                time.sleep(0.5)  # let the queue workers go idle again: pickup on an idle daemon
                job_id = f"pickup-{i}"
                request = {"id": job_id, "kind": "predict", "volume": str(sections[i % len(sections)]),
                           "bundles": [str(bundle.resolve())], "out": str(home / "pickup-out"), "target": {"mode": "image"},
                           "overwrite": True}  # fmt: skip
                staged = requests / f".{job_id}.part"
                staged.write_text(json.dumps(request))
                landed = time.time()
                os.rename(staged, requests / f"{job_id}.json")
                record = wait_for(lambda: (r := journal.get(job_id)) and r.started and r)
                pickups.append(record.started - landed)
                wait_for(lambda: journal.get(job_id).final)

            time.sleep(2.0)  # let the last job's aftermath settle before measuring idle
            pids = [daemon.process.pid, *daemon.children()]
            before, t0 = cpu_seconds(pids), time.monotonic()
            time.sleep(args.idle)
            idle_pct = 100.0 * (cpu_seconds(pids) - before) / (time.monotonic() - t0)

            overheads, computes = [], []
            (scope / "run").mkdir(exist_ok=True)
            for i in range(args.tiles):
                name = f"run/tile_{i:03d}.png"
                staged = scope / f".tile_{i:03d}.part"
                shutil.copy(sections[i % len(sections)], staged)
                landed = time.time()
                os.rename(staged, scope / name)
                record = wait_for(lambda: next((r for r in journal.list(limit=3) if r.client == name and r.final), None))
                assert record.state == "done", record.error
                output = Path(record.result.outputs[0])
                latency = output.stat().st_mtime - landed
                computes.append(record.result.seconds)
                overheads.append(latency - record.result.seconds)
        except BaseException:
            journal.close()
            print(f"daemon log ({tmp / 'daemon.log'}):\n{daemon.log_tail()}", file=sys.stderr)
            daemon.kill()
            raise
        journal.close()
        code = daemon.stop()
        if code != 0:
            print(f"warning: the daemon exited with status {code}", file=sys.stderr)

        p50, p95 = percentile(overheads, 50), percentile(overheads, 95)
        print(f"{'measure':38s} {'value':>10s}  target")
        print(f"{'request pickup p50 / max (s)':38s} {percentile(pickups, 50):10.3f}  < 0.2 (max {max(pickups):.3f})")
        print(f"{'idle CPU (% of one core)':38s} {idle_pct:10.2f}  < 1")
        print(f"{'scope overhead p50 (s)':38s} {p50:10.3f}")
        print(f"{'scope overhead p95 (s)':38s} {p95:10.3f}  < 0.5")
        print(f"{'engine time per tile p50 (s)':38s} {percentile(computes, 50):10.3f}  (not overhead)")
        print(
            f"RESULT pickup_s={max(pickups):.3f} idle_cpu_pct={idle_pct:.2f} "
            f"scope_overhead_p50_s={p50:.3f} scope_overhead_p95_s={p95:.3f}"
        )
    finally:
        if not os.environ.get("KEEP_BENCH_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
