"""The lab console under a lab's load: 10,000 jobs in the journal.

Starts ``membraind serve`` as a real process (SQLite journal, the console on a free
port, ``serve_runs_jobs = false`` so that submitted jobs stay queued and nothing but the
daemon's own upkeep runs), with the journal filled beforehand with 10,000 finished jobs.

- page load: server time (the console's ``Server-Timing`` header) of the overview, the
  jobs list and a job's page, each asked for ``--pages`` times; target p95 < 100 ms;
- event latency: from just before a job is submitted (ZeroMQ API, so the journal changes
  outside the console) to its event arriving on an open console event stream (what a
  browser's page reads); target p95 < 0.3 s;
- idle CPU: the daemon's CPU use over ``--idle-seconds`` with a console page's event
  stream open and nothing happening; target < 1 %.

    python benchmarks/console.py [--jobs 10000] [--pages 100] [--events 40] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.harness import SupervisedDaemon, free_port
from membraind.jobs.execute import JobResult
from membraind.service.job import Job, job_from_request
from membraind.service.journal import SqliteJournal


def fill_journal(path: Path, home: Path, count: int) -> str:
    """``count`` finished segment2d jobs; returns one id (a job page to load)."""
    journal = SqliteJournal(path)
    journal._db.execute("PRAGMA synchronous=OFF")  # set-up speed only; the daemon opens it as always
    job_id = ""
    for i in range(count):
        job: Job = job_from_request({"kind": "segment2d", "membrane": str(home / f"in{i}"), "out": str(home / f"out{i}")},
                                    source="benchmark")  # fmt: skip
        journal.add(job)
        journal.claim(job.id, "bench", 60)
        if i % 10 == 9:
            journal.fail(job.id, "benchmark: a failed job", "bench")
        else:
            journal.finish(job.id, JobResult(outputs=[str(home / f"out{i}")], summary="done"), "bench")
        job_id = job.id
    journal.close()
    return job_id


class EventStream(threading.Thread):
    """An open console event stream: when each job's first event arrived."""

    def __init__(self, port: int, cookie: str) -> None:
        super().__init__(daemon=True)
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.connection.request("GET", "/events", headers={"Cookie": cookie})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.status
        self.arrived: dict[str, float] = {}
        self.hello = threading.Event()

    def run(self) -> None:
        for raw in self.response:
            line = raw.decode().strip()
            if line.startswith("event: hello"):
                self.hello.set()
            if line.startswith("data: ") and '"id"' in line:
                self.arrived.setdefault(json.loads(line[6:])["id"], time.perf_counter())


def page_times(port: int, cookie: str, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        times.append(float(re.search(r"dur=([\d.]+)", response.getheader("server-timing")).group(1)))
        connection.close()
    return times


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    from membraind_client import Client

    with tempfile.TemporaryDirectory(prefix="membraind-console-bench-") as folder:
        tmp = Path(folder)
        home, port = tmp / "home", free_port()
        started = time.perf_counter()
        job_id = fill_journal(home / "state" / "journal.db", home, args.jobs)
        print(f"journal filled with {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        api = ipc_api(tmp)
        config = {"service": {"home": home, "api": api, "queue": {"serve_runs_jobs": False},
                              "web": {"listen": f"127.0.0.1:{port}"}}}  # fmt: skip
        daemon = SupervisedDaemon(write_daemon_toml(tmp / "membraind.toml", config), tmp / "daemon.log").start()
        try:
            cookie = f"membraind_console_{port}={(home / 'console-token').read_text().strip()}"
            pages = {}
            for name, path in (("overview", "/"), ("jobs", "/jobs"), ("job", f"/jobs/{job_id}")):
                times = page_times(port, cookie, path, args.pages)
                pages[name] = float(np.percentile(times, 95))
                print(f"{name:9s} page: median {np.median(times):6.1f} ms, p95 {pages[name]:6.1f} ms (server time)")

            stream = EventStream(port, cookie)
            stream.start()
            stream.hello.wait(10)
            client = Client(api["endpoint"], timeout=10.0)
            latencies = []
            for i in range(args.events):
                spec = {"kind": "segment2d", "membrane": str(home / f"new{i}"), "out": str(home / f"new-out{i}")}
                sent = time.perf_counter()
                submitted = client.submit(spec)
                deadline = time.monotonic() + 10
                while submitted.job.id not in stream.arrived and time.monotonic() < deadline:
                    time.sleep(0.002)
                latencies.append(stream.arrived.get(submitted.job.id, float("inf")) - sent)
                client.cancel(submitted.job.id)
            event_p95 = float(np.percentile(latencies, 95))
            print(f"event latency: median {np.median(latencies) * 1000:.0f} ms, p95 {event_p95 * 1000:.0f} ms")

            time.sleep(2.0)  # the cancellations' events pass
            before, t0 = cpu_seconds(daemon.process.pid), time.perf_counter()
            time.sleep(args.idle_seconds)  # measuring idleness: nothing to wait for but time
            idle = (cpu_seconds(daemon.process.pid) - before) / (time.perf_counter() - t0) * 100
            print(f"idle daemon with a console page open: {idle:.2f} % of one core over {args.idle_seconds:.0f} s")
            client.close()
        finally:
            daemon.stop()
    print(f"RESULT page_p95_ms={max(pages.values()):.1f} event_p95_s={event_p95:.3f} idle_cpu_pct={idle:.2f}")


if __name__ == "__main__":
    main()
