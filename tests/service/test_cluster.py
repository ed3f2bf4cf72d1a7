"""Scale-out on one machine: ``membraind serve`` and ``membraind worker`` processes sharing a
real Redis server, predicting real ISBI tiles; a worker SIGKILLed with a job in hand."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis as redis_py
from PIL import Image
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from membraind_client.client import Client

from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.harness import RedisServer, SupervisedDaemon, free_port, wait_until
from membraind.service.journal.redis import RedisJournal
from membraind.service.runner import worker_name
from tests.conftest import run_cli

pytestmark = pytest.mark.isbi

TILES = 300
CROP = 128
LEASE = 3.0


def cut_tiles(isbi: Path, folder: Path, count: int = TILES) -> list[Path]:
    """``count`` distinct 128 x 128 crops of the ISBI test sections, as PNG files."""
    folder.mkdir(parents=True)
    tiles = []
    for index in range(count):
        section, place = divmod(index, 10)
        with Image.open(isbi / "test" / "image" / f"{section % 30:02d}.png") as image:
            page = np.asarray(image.convert("L"))
        y, x = divmod(place, 3)
        crop = page[y * 100 : y * 100 + CROP, x * 150 : x * 150 + CROP]
        path = folder / f"s{section:02d}" / f"tile_{place}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(path)
        tiles.append(path)
    return tiles


class Cluster:
    """A configuration for one serve and its workers on the Redis server at ``url``."""

    def __init__(self, tmp: Path, name: str, url: str, bundle: Path, tiles: Path, config: dict | None = None) -> None:
        """``config`` (the configuration file's shape) is laid over the cluster's base configuration."""
        self.tmp, self.name, self.url = tmp / name, name, url
        self.tmp.mkdir(parents=True)
        self.scope, self.out = self.tmp / "home" / "scope", self.tmp / "home" / "out"
        shutil.copytree(tiles, self.scope)
        secret = tmp / "queue.secret"
        if not secret.exists():
            assert run_cli("secret", str(secret)).returncode == 0
        base = {
            "service": {
                "home": self.tmp / "home", "roots": [bundle.parent], "retry_delay_seconds": 0.2, "rescan_seconds": 600,
                "queue": {"backend": "redis", "redis_url": url, "prefix": name, "secret_file": secret, "lease_seconds": LEASE},
                "api": ipc_api(self.tmp),
                "scope": [{"folder": self.scope, "out": self.out, "bundles": [bundle], "stable_seconds": 0}],
            },
            "predict": {"device": "cpu", "runtime": "torch", "tile_size": 128, "context": 32},
        }  # fmt: skip
        self.config = write_daemon_toml(self.tmp / "membraind.toml", base, config or {})
        self.journal = RedisJournal(url, f"{name}:")

    def client(self) -> Client:
        api = ipc_api(self.tmp)
        return Client(api["endpoint"], events=api["events"])

    def serve(self) -> SupervisedDaemon:
        return SupervisedDaemon(self.config, self.tmp / "serve.log")

    def worker(self, role: str) -> SupervisedDaemon:
        return SupervisedDaemon(self.config, self.tmp / f"{role}.log", command=["worker", "--cpu", "--name", role])

    def done(self) -> int:
        return self.journal.counts().get("done", 0)

    def outputs(self) -> dict[Path, np.ndarray]:
        found = {}
        for path in sorted(self.out.rglob("*.png")):
            with Image.open(path) as image:
                found[path.relative_to(self.out)] = np.asarray(image)
        return found


class WriteCounter(FileSystemEventHandler):
    """Counts the files renamed into place (how every output is written: atomically)."""

    def __init__(self) -> None:
        self.moved: Counter[str] = Counter()

    def on_moved(self, event) -> None:
        self.moved[event.dest_path] += 1


def freeze_a_running_job(cluster: Cluster, victim: SupervisedDaemon, holder: str) -> tuple[str, int]:
    """SIGSTOP the victim worker and its engine while it runs a job (so it can neither finish
    it, record it nor write); returns (job id, engine pid)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [r for r in cluster.journal.list(states=("running",), limit=None) if r.worker == holder]
        engines = victim.engines()
        if running and engines:
            frozen = [engines[0], victim.process.pid]
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            record = cluster.journal.get(running[0].id)
            if record.state == "running" and record.worker == holder:
                return record.id, engines[0]
            for pid in frozen:  # it finished in between: try the next one
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"{holder} never held a running job")


def test_three_workers_share_300_tiles_and_a_killed_workers_job_is_taken_over(tmp_path, trained_bundle, isbi, redis_url):
    tiles = tmp_path / "tiles"
    cut_tiles(isbi, tiles)

    # The reference: one worker.
    single = Cluster(tmp_path, "single", redis_url, trained_bundle, tiles)
    with single.serve(), single.worker("w0"):
        wait_until(lambda: single.done() == TILES, 600, what=f"{TILES} tiles predicted by one worker")
    reference = single.outputs()
    assert len(reference) == TILES

    cluster = Cluster(tmp_path, "three", redis_url, trained_bundle, tiles)
    for name in reference:  # the folders exist before the watch starts, so no write can slip past it
        (cluster.out / name).parent.mkdir(parents=True, exist_ok=True)
    counter, observer = WriteCounter(), Observer()
    observer.schedule(counter, str(cluster.out), recursive=True)
    observer.start()
    serve = cluster.serve().start()
    workers = {role: cluster.worker(role).start() for role in ("w1", "w2", "w3")}
    try:
        wait_until(lambda: cluster.done() >= TILES // 2, 600, what="half of the tiles")
        victim_name = worker_name("w1")
        job_id, engine = freeze_a_running_job(cluster, workers["w1"], victim_name)
        workers["w1"].kill()  # the host is lost: the worker and its engine die at once
        os.kill(engine, signal.SIGKILL)
        killed_at = time.time()

        wait_until(lambda: cluster.done() == TILES, 600, what="every tile, with the killed worker's job taken over")
        for role in ("w2", "w3"):
            assert workers[role].stop() == 0
        assert serve.stop() == 0
    finally:
        for process in [serve, *workers.values()]:
            process.kill()
        observer.stop()
        observer.join()

    records = cluster.journal.list(limit=None)
    assert len(records) == TILES and {r.state for r in records} == {"done"}
    for record in records:
        assert [e[3] for e in cluster.journal.events(record.id)].count("done") == 1, f"{record.id} done twice"
    taken = cluster.journal.get(job_id)
    events = cluster.journal.events(job_id)
    takeover = next(e for e in events if e[3] == "queued" and "taken over" in e[5])
    assert victim_name in takeover[5]
    # Its lease was renewed about a third of it before the freeze at most, so it ran out no sooner
    # than about 2/3 of it after (1 s of slack for a renewal made late on a busy machine).
    assert takeover[4] - killed_at >= LEASE * 2 / 3 - 1.0, "taken over before the lease could have expired"
    assert taken.worker != victim_name and taken.attempts == 2
    assert len({r.worker for r in records}) == 3, "all three workers took jobs"

    outputs = cluster.outputs()
    assert outputs.keys() == reference.keys()
    for name, pixels in outputs.items():
        assert np.array_equal(pixels, reference[name]), f"{name} differs from the single-worker run"
    # The frozen engine may have been writing its tile: a host lost then leaves that write's
    # temporary file (hidden, beside the tile), never a half-written tile.
    leftovers = [p for p in cluster.out.rglob(".*") if p.is_file()]
    assert {p.parent / p.name[1:].rsplit(".tmp-", 1)[0] for p in leftovers} <= {Path(o) for o in taken.result.outputs}, \
        f"a half-written file was left: {leftovers}"
    written = {Path(path).relative_to(cluster.out): count for path, count in counter.moved.items()}
    assert written.keys() == reference.keys() and set(written.values()) == {1}, "a tile was written more than once"


def test_a_worker_and_serve_wait_for_a_redis_that_is_not_up_yet(tmp_path, trained_bundle, isbi):
    tiles = tmp_path / "tiles"
    cut_tiles(isbi, tiles, count=1)
    port = free_port()
    cluster = Cluster(tmp_path, "late", f"redis://127.0.0.1:{port}/0", trained_bundle, tiles)
    worker, serve = cluster.worker("w0"), cluster.serve()
    worker.start(until="STATUS=waiting for the Redis server at redis://127.0.0.1")
    serve.start(until="STATUS=waiting for the Redis server")
    try:
        with RedisServer(tmp_path / "redis-late", port=port):
            assert worker.wait_for("READY=1", 180) and serve.wait_for("READY=1", 180), worker.log_tail() + serve.log_tail()
            wait_until(lambda: cluster.done() == 1, 300, what="the tile predicted once Redis is up")
            assert worker.stop() == 0 and serve.stop() == 0
    finally:
        worker.kill()
        serve.kill()
    status = run_cli("--config", str(cluster.config), "status")  # Redis gone again
    assert status.returncode == 2 and f"cannot read the Redis server at redis://127.0.0.1:{port}/0" in status.stderr
    refused = Cluster(tmp_path, "refused", f"redis://:wrong@127.0.0.1:{port}/0", trained_bundle, tiles)
    with RedisServer(tmp_path / "redis-auth", port=port):
        server_cli = redis_py.Redis(port=port)
        server_cli.config_set("requirepass", "right")
        result = run_cli("--config", str(refused.config), "worker", "--cpu")
        assert result.returncode == 2 and "refused the connection" in result.stderr and "wrong" not in result.stderr


def test_a_request_dropped_while_redis_is_down_waits_and_runs_when_it_is_back(tmp_path, trained_bundle, isbi):
    tiles = tmp_path / "tiles"
    cut_tiles(isbi, tiles, count=1)
    port = free_port()
    cluster = Cluster(tmp_path, "outage", f"redis://127.0.0.1:{port}/0", trained_bundle, tiles)
    requests = cluster.tmp / "home" / "requests"
    request = {"id": "onnx-1", "kind": "export-onnx", "bundle": str(trained_bundle), "out": str(cluster.tmp / "home" / "m.onnx")}
    redis_server = RedisServer(tmp_path / "redis-outage", port=port).start()
    try:
        with cluster.serve(), cluster.worker("w0"):
            wait_until(lambda: cluster.done() == 1, 300, what="the tile predicted before the outage")
            redis_server.stop()  # its append-only file keeps the journal and the queue
            (requests / ".onnx.part").write_text(json.dumps(request))
            os.replace(requests / ".onnx.part", requests / "onnx.json")
            wait_until(lambda: "request onnx.json cannot be queued now" in (cluster.tmp / "serve.log").read_text(), 120,
                       what="serve to say the request waits for the journal")  # fmt: skip
            assert not (requests / "onnx.json").exists() and not (requests / "accepted" / "onnx.json").exists()
            redis_server.start()
            status = requests / "accepted" / "onnx.json.status.json"
            wait_until(lambda: status.exists() and json.loads(status.read_text())["state"] == "done", 300,
                       what="the request run once Redis is back")  # fmt: skip
            assert Path(json.loads(status.read_text())["result"]["outputs"][0]).is_file()
            assert [e[3] for e in cluster.journal.events("onnx-1")] == ["queued", "running", "done"]
    finally:
        redis_server.stop()


def test_one_scheduler_per_cluster_and_unique_worker_names(tmp_path, trained_bundle, isbi, redis_url):
    tiles = tmp_path / "tiles"
    cut_tiles(isbi, tiles, count=1)
    first = Cluster(tmp_path, "lab", redis_url, trained_bundle, tiles)
    second = Cluster(tmp_path / "other-host", "lab", redis_url, trained_bundle, tiles)  # same prefix, other state folder
    with first.serve(), first.worker("w0"):
        refused = run_cli("--config", str(second.config), "serve")
        assert refused.returncode == 2
        assert "already schedules the cluster 'lab'" in refused.stderr and "membraind worker" in refused.stderr
        twin = run_cli("--config", str(first.config), "worker", "--cpu", "--name", "w0")
        assert twin.returncode == 2 and "another membraind worker w0" in twin.stderr and "--name" in twin.stderr
        wait_until(lambda: first.done() == 1, 300, what="the tile predicted by the worker")
        status = run_cli("--config", str(first.config), "status", "--json")  # from any host with the configuration
        assert status.returncode == 0, status.stderr
        (job,) = json.loads(status.stdout)["jobs"]
        assert job["state"] == "done" and job["worker"] == worker_name("w0") and job["source"] == "scope"


def test_a_volume_split_among_workers_is_one_job_and_equals_the_unsplit_prediction(tmp_path, trained_bundle, isbi, redis_url):
    sections = tmp_path / "home-data" / "em"
    sections.mkdir(parents=True)
    for z in range(8):
        with Image.open(isbi / "test" / "image" / f"{z:02d}.png") as image:
            Image.fromarray(np.asarray(image.convert("L"))[:256, :256].copy()).save(sections / f"{z:02d}.png")
    empty = tmp_path / "no-tiles"
    empty.mkdir()

    def predict_volume(cluster: Cluster, workers: int) -> tuple[dict, list]:
        updates: list = []
        spec = {"kind": "predict", "volume": str(sections), "bundles": [str(trained_bundle)], "out": str(cluster.out)}
        with cluster.serve(), contextlib.ExitStack() as stack:
            for index in range(workers):
                stack.enter_context(cluster.worker(f"w{index}"))
            with cluster.client() as client:
                job_id = client.submit(spec, job_id="volume-1").job.id
                final = client.wait(job_id, updates.append, timeout=600)
        assert final.state == "done", final.error
        return final, updates

    def reading_sections(part_sections: int) -> dict:
        return {"service": {"roots": [trained_bundle.parent, sections.parent], "queue": {"part_sections": part_sections}}}

    whole = Cluster(tmp_path, "whole", redis_url, trained_bundle, empty, reading_sections(0))
    split = Cluster(tmp_path, "split", redis_url, trained_bundle, empty, reading_sections(2))
    predict_volume(whole, 1)
    assert whole.journal.children("volume-1") == []
    final, updates = predict_volume(split, 2)

    parts = split.journal.children("volume-1")
    assert [(p.state, p.parent) for p in parts] == [("done", "volume-1")] * 4
    assert [json_box(p) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert final.progress == 1.0 and "4 parts of up to 2 sections" in final.result.summary
    progress = [u.progress for u in updates if u.id == "volume-1"]
    assert progress == sorted(progress) and any(0 < p < 1 for p in progress), "one job's progress, rising"
    assert [r.id for r in split.journal.list(limit=None) if r.parent is None] == ["volume-1"]

    expected, got = whole.outputs(), split.outputs()
    assert len(expected) >= 8 * 4 and got.keys() == expected.keys(), "the same tiles (8 sections x 4, and mips)"
    for name, pixels in got.items():
        assert np.array_equal(pixels, expected[name]), f"{name} differs from the unsplit prediction"
    descriptors = sorted(whole.out.rglob("*.vsvi"))
    assert descriptors
    for path in descriptors:
        twin = split.out / path.relative_to(whole.out)
        assert twin.read_text().replace(str(split.out), "OUT") == path.read_text().replace(str(whole.out), "OUT")


def json_box(record) -> tuple[int, int]:
    box = record.spec["target"]["box"]
    return box["z0"], box["z1"]
