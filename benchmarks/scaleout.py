"""Scale-out: volume throughput with 1, 2 and 4 workers, and the queue's overhead per job.

Throughput: a real Redis server, ``membraind serve`` and N ``membraind worker --cpu``
processes (each engine limited to one CPU thread, as each GPU worker has one GPU), all
started the systemd way (READY over ``$NOTIFY_SOCKET``). The volume (the 30 ISBI test
sections, ``--repeat`` times over: 120 sections by default) is submitted through the
ZeroMQ API as one job, which the scheduler splits into parts of ``--part-sections`` sections
that the workers share; timed from the submission to the job done. The speedup is the
ratio to one worker; on a machine with C cores it is expected to follow min(N, C).

Overhead: the journal and queue cost of one job without any engine work (submit:
journal record + enqueue; then dequeue, claim, renew the lease once, finish), measured
in this process against Redis and against the SQLite files, side by side.

    python benchmarks/scaleout.py [--workers 1,2,4] [--part-sections 4] [--repeat 4] [--jobs 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import DEFAULT_ISBI, train_small_bundle  # noqa: E402  (the same small network)

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per worker


def repeated_sections(sections: Path, folder: Path, times: int) -> Path:
    """A folder of links to ``sections``, ``times`` over (a larger volume without copying the data)."""
    folder.mkdir()
    originals = sorted(sections.iterdir())
    for index in range(times * len(originals)):
        original = originals[index % len(originals)]
        (folder / f"{index:04d}{original.suffix}").symlink_to(original)
    return folder


def cluster_config(tmp: Path, url: str, secret: Path, roots: list[Path], prefix: str, part_sections: int) -> Path:
    from membraind.daemon_toml import ipc_api, write_daemon_toml

    return write_daemon_toml(tmp / f"{prefix}.toml", {
        "service": {
            "home": tmp / prefix, "roots": roots,
            "queue": {"backend": "redis", "redis_url": url, "prefix": prefix, "secret_file": secret, "part_sections": part_sections},
            "api": ipc_api(tmp, f"{prefix}-"),
        },
        "predict": {"device": "cpu", "runtime": "torch", "tile_size": 256, "context": 32},
    })  # fmt: skip


def volume_seconds(tmp: Path, url: str, secret: Path, bundle: Path, volume: Path, workers: int, part_sections: int) -> float:
    """Seconds for ``workers`` workers to predict ``volume``, split into parts of ``part_sections`` sections."""
    from membraind_client.client import Client

    from membraind.harness import SupervisedDaemon

    prefix = f"n{workers}"
    config = cluster_config(tmp, url, secret, [bundle.parent, volume], prefix, part_sections)
    serve = SupervisedDaemon(config, tmp / f"{prefix}-serve.log").start()
    started = [SupervisedDaemon(config, tmp / f"{prefix}-w{i}.log", env=WORKER_ENV, command=["worker", "--cpu", "--name", f"w{i}"])
               for i in range(workers)]  # fmt: skip
    try:
        for worker in started:
            worker.start()
        with Client(f"ipc://{tmp}/{prefix}-api.sock", events=f"ipc://{tmp}/{prefix}-events.sock") as client:
            begin = time.perf_counter()
            spec = {"kind": "predict", "volume": str(volume), "bundles": [str(bundle)], "out": str(tmp / prefix / "out")}
            final = client.wait(client.submit(spec).job.id, timeout=3600)
            if final.state != "done":
                raise RuntimeError(f"the volume job ended {final.state}: {final.error}")
            return time.perf_counter() - begin
    finally:
        for process in [*started, serve]:
            process.stop()


def overhead_ms(tmp: Path, backend: str, url: str, secret: Path, jobs: int) -> float:
    """Journal + queue milliseconds per job on ``backend``, no engine work."""
    from membraind.config import Settings
    from membraind.jobs.execute import JobResult
    from membraind.service.dispatcher import Dispatcher
    from membraind.service.job import Job
    from membraind.service.journal import open_journal
    from membraind.service.queues import JobQueues, open_hueys

    queue = {"backend": backend} | ({"redis_url": url, "secret_file": str(secret), "prefix": "overhead"} if backend == "redis" else {})
    settings = Settings.model_validate({"service": {"home": str(tmp / f"overhead-{backend}"), "queue": queue}})
    journal = open_journal(settings.service)
    dispatcher = Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service)))
    bundle = settings.service.home / "model"
    try:
        begin = time.perf_counter()
        for index in range(jobs):
            dispatcher.submit(Job(id=f"job-{index}", spec={"kind": "export-onnx", "bundle": str(bundle)}))
        huey = dispatcher.queues.hueys["cpu"]
        for _ in range(jobs):
            job_id = huey.dequeue().args[0]
            journal.claim(job_id, "bench:w0", 30)
            journal.renew(job_id, "bench:w0", 30)
            journal.finish(job_id, JobResult(summary="nothing"), "bench:w0")
        return (time.perf_counter() - begin) * 1000 / jobs
    finally:
        journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isbi", type=Path, default=Path(os.environ.get("ISBI2012_DIR", DEFAULT_ISBI)))
    parser.add_argument("--bundle", type=Path, help="model bundle (default: train a small one)")
    parser.add_argument("--volume", type=Path, help="folder of sections (default: the ISBI test images)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare (the first is the baseline)")
    parser.add_argument("--part-sections", "--chunk", type=int, default=4, help="sections per part (each part is one queued job)")
    parser.add_argument("--repeat", type=int, default=4, help="times the ISBI test sections make up the volume")
    parser.add_argument("--jobs", type=int, default=500, help="jobs for the overhead measurement")
    args = parser.parse_args()

    from membraind.harness import RedisServer
    from membraind.service.queue_messages import write_secret

    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="membraind-scaleout-") as name, RedisServer(Path(name) / "redis") as redis:
        tmp = Path(name)
        volume = args.volume or repeated_sections(args.isbi / "test" / "image", tmp / "volume", args.repeat)
        secret = tmp / "queue.secret"
        write_secret(secret)
        bundle = args.bundle or train_small_bundle(args.isbi, tmp / "train")
        seconds = {n: volume_seconds(tmp, redis.url, secret, bundle, volume, n, args.part_sections) for n in counts}
        overhead = {backend: overhead_ms(tmp, backend, redis.url, secret, args.jobs) for backend in ("sqlite", "redis")}

        from membraind.volumes.open_volume import open_volume

        sections = open_volume(volume).shape[0]
    print(f"volume: {args.volume or 'ISBI test sections x ' + str(args.repeat)} ({sections} sections, {args.part_sections} per job), {os.cpu_count()} CPU cores, one per worker")
    print(f"{'workers':>8} {'seconds':>9} {'sections/s':>11} {'speedup':>8}")
    base = seconds[counts[0]]
    for n in counts:
        print(f"{n:>8} {seconds[n]:>9.2f} {sections / seconds[n]:>11.2f} {base / seconds[n]:>8.2f}")
    print(f"queue overhead per job ({args.jobs} jobs: submit, dequeue, claim, renew, finish):")
    for backend, ms in overhead.items():
        print(f"  {backend:>6}: {ms:.2f} ms")
    speedups = " ".join(f"speedup_{n}={base / seconds[n]:.2f}" for n in counts[1:])
    print(f"RESULT {speedups} redis_overhead_ms={overhead['redis']:.2f} sqlite_overhead_ms={overhead['sqlite']:.2f}")


if __name__ == "__main__":
    main()
