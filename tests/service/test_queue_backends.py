"""The Huey queues on both backends (a real SQLite file, a real Redis server): priorities,
delays, and messages that are signed JSON, so that nothing from the network is ever
unpickled."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import re
import stat

import pytest
import redis as redis_py
from pydantic import ValidationError

from membraind.config import Settings
from membraind.errors import ConfigError
from membraind.harness import wait_until
from membraind.service.queue_messages import BadQueueMessage, read_secret, write_secret
from membraind.service.queues import JobQueues, open_hueys


def service_settings(tmp_path, backend: str, redis_url: str = "", secret: bytes = b"s" * 32, prefix: str = "t"):
    queue: dict = {"backend": backend}
    if backend == "redis":
        secret_file = tmp_path / f"secret-{len(secret)}-{secret[:4].hex()}"
        secret_file.write_bytes(secret)
        queue |= {"redis_url": redis_url, "secret_file": str(secret_file), "prefix": prefix}
    return Settings.model_validate({"service": {"home": str(tmp_path / "home"), "queue": queue}}).service


@pytest.fixture(params=["sqlite", "redis"])
def service(request, tmp_path):
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    return service_settings(tmp_path, request.param, url)


class Exploit:
    """Unpickling this creates a file: proof that a message was unpickled."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_jobs_come_out_by_priority_then_in_order(service):
    queues = JobQueues(open_hueys(service))
    for job_id, priority in [("bulk-1", 10), ("tile", 20), ("bulk-2", 10), ("anchor", 30)]:
        queues.enqueue(job_id, "gpu", priority)
    queues.enqueue("later", "gpu", 99, delay=3600)
    assert queues.pending() == {"gpu": 5, "cpu": 0}
    assert queues.job_ids() == {"bulk-1", "tile", "bulk-2", "anchor", "later"}
    huey = queues.hueys["gpu"]
    later = huey.dequeue()  # the consumer moves it to the schedule until its time comes
    assert later.args == ("later",) and (later.eta - datetime.datetime.utcnow()).total_seconds() > 3500
    order = [huey.dequeue().args[0] for _ in range(4)]
    assert order == ["anchor", "tile", "bulk-1", "bulk-2"]
    assert huey.dequeue() is None
    queues.flush()
    assert queues.pending() == {"gpu": 0, "cpu": 0}


def test_a_consumer_runs_each_queued_job_once(service):
    queues = JobQueues(open_hueys(service), poll_seconds=0.05)
    ran: list[str] = []
    queues.executor = ran.append
    for index in range(20):
        queues.enqueue(f"job-{index}", "cpu" if index % 2 else "gpu", 0)
    queues.start()
    try:
        wait_until(lambda: len(ran) >= 20, 60, what="20 jobs to run")
    finally:
        queues.stop()
    assert sorted(ran) == sorted(f"job-{index}" for index in range(20))


def test_a_forged_or_pickled_message_is_dropped_unread(tmp_path, redis_url):
    service = service_settings(tmp_path, "redis", redis_url)
    queues = JobQueues(open_hueys(service))
    queues.enqueue("genuine", "gpu", 0)
    stored = redis_py.Redis.from_url(redis_url).zrange("huey.redis.t.gpu", 0, -1)[0]
    signature, _, body = stored[8:].partition(b".")  # huey's priority queue puts an 8-byte time stamp first
    assert re.fullmatch(rb"[0-9a-f]{64}", signature), "an HMAC-SHA256 signature first"
    assert json.loads(body)["args"] == ["genuine"], "then JSON, not pickle (which starts with 0x80)"

    other_cluster = service_settings(tmp_path, "redis", redis_url, secret=b"o" * 32)
    JobQueues(open_hueys(other_cluster)).enqueue("forged", "gpu", 50)
    marker = tmp_path / "unpickled"
    huey = queues.hueys["gpu"]
    huey.storage.enqueue(pickle.dumps(Exploit(marker)), priority=99)  # what an attacker on the network could push
    with pytest.raises(BadQueueMessage, match="not signed with this cluster's secret"):
        huey.dequeue()
    with pytest.raises(BadQueueMessage, match="not signed"):
        huey.dequeue()
    assert huey.dequeue().args == ("genuine",)
    assert not marker.exists(), "a message was unpickled"


def test_the_local_queue_refuses_pickle_too(tmp_path):
    queues = JobQueues(open_hueys(service_settings(tmp_path, "sqlite")))
    marker = tmp_path / "unpickled"
    queues.hueys["cpu"].storage.enqueue(pickle.dumps(Exploit(marker)), priority=0)
    with pytest.raises(BadQueueMessage, match="not a membraind message"):
        queues.hueys["cpu"].dequeue()
    assert not marker.exists()


def test_secrets_are_made_private_and_checked(tmp_path):
    path = tmp_path / "etc" / "queue.secret"
    write_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(read_secret(path)) == 64
    with pytest.raises(ConfigError, match="exists; a new secret would lock out"):
        write_secret(path)
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match=r"short: holds 3 bytes; a secret needs at least 16"):
        read_secret(tmp_path / "short")
    with pytest.raises(ConfigError, match=r"missing: cannot be read .*membraind secret"):
        read_secret(tmp_path / "missing")
    with pytest.raises(ValidationError, match="backend redis needs secret_file"):
        Settings.model_validate({"service": {"queue": {"backend": "redis"}}})
