"""The daemon's ZeroMQ API over real sockets: fuzzed frames, a daemon restarted under a
waiting client, CurveZMQ, a client that never reads, the event stream."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import zmq
from membraind_client import Client, DaemonUnreachable, RequestRejected
from membraind_client.client import EventTracker
from membraind_client.keys import generate_keys
from membraind_client.messages import MAX_MESSAGE_BYTES, Event, JobStatus, Ping, Submit, parse_reply

from membraind import harness
from membraind.service.journal import SqliteJournal
from tests.conftest import ApiLab

pytestmark = pytest.mark.isbi


class Api(ApiLab):
    def journal_rows(self, job_id: str) -> tuple[int, list]:
        """How many jobs have this id, and its events."""
        journal = SqliteJournal(self.home / "state" / "journal.db")
        try:
            count = sum(1 for r in journal.list(limit=None) if r.id == job_id)
            return count, journal.events(job_id)
        finally:
            journal.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, isbi):
    api = Api(tmp_path_factory.mktemp("api"), isbi)
    with api.supervised() as daemon:
        yield api, daemon


# -- malformed input -------------------------------------------------------------------------
def _fuzz_messages(rng: random.Random, count: int) -> list[tuple[str, list[bytes]]]:
    """(expected error code or "any", frames) for ``count`` hostile messages."""
    valid = [Ping().model_dump_json().encode(), Submit(job_id="fuzz", spec={"kind": "segment2d"}).model_dump_json().encode(),
             b'{"v": 1, "type": "status", "job_id": "x"}', b'{"v": 1, "type": "list", "limit": 3}']  # fmt: skip
    junk_values = [None, True, -1, 2**70, 1.5, "", "x" * 300, [], {}, [1, [2]], {"a": {"b": None}}, "\ud800"]
    out = []
    for i in range(count):
        case = i % 10
        if case == 0:
            out.append(("bad-message", [rng.randbytes(rng.randrange(0, 2000))]))
        elif case == 1:
            msg = rng.choice(valid)
            out.append(("bad-message", [msg[: rng.randrange(1, len(msg) - 1)]]))  # truncated JSON
        elif case == 2:
            version = rng.choice([0, 2, 99, "1", None, -1, 1.5, [1]])
            data = json.loads(rng.choice(valid))
            data["v"] = version
            out.append(("unsupported-version", [json.dumps(data).encode()]))
        elif case == 3:
            data = json.loads(rng.choice(valid))
            del data["v"]
            out.append(("unsupported-version", [json.dumps(data).encode()]))
        elif case == 4:
            data = {"v": 1, "type": rng.choice(["pong", "submitted", "shutdown", "", 7, None, "PING"])}
            out.append(("invalid", [json.dumps(data).encode()]))
        elif case == 5:  # the right type, wrong fields
            data = json.loads(rng.choice(valid))
            data[rng.choice(["job_id", "limit", "states", "spec", "priority", "extra"])] = rng.choice(junk_values)
            out.append(("any", [json.dumps(data).encode()]))
        elif case == 6:  # submit with a hostile spec
            spec = {rng.choice(["kind", "membrane", "out", "sections", "h", "zz"]): rng.choice(junk_values) for _ in range(3)}
            spec.setdefault("kind", rng.choice(["segment2d", "predict", "train", "nope"]))
            submit = {"v": 1, "type": "submit", "job_id": f"fuzz-{i}", "spec": spec}  # json escapes lone surrogates
            out.append(("invalid", [json.dumps(submit).encode()]))
        elif case == 7:
            out.append(("bad-message", [rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(2, 5))]))
        elif case == 8:
            out.append(("bad-message", [rng.choice([b"[1, 2]", b'"text"', b"17", b"null", b"\xff\xfe{}", b"[" * 50_000])]))
        else:
            size = MAX_MESSAGE_BYTES + rng.randrange(1, 4 * MAX_MESSAGE_BYTES) if i % 100 == 9 else rng.randrange(1, 50_000)
            body = b'{"v": 1, "type": "ping", "pad": "' + b"x" * size + b'"}'
            out.append(("too-large" if len(body) > MAX_MESSAGE_BYTES else "invalid", [body]))
    return out


def test_1000_hostile_messages_each_answered_and_the_server_keeps_serving(served):
    api, daemon = served
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)  # any frames at all, with or without REQ's empty delimiter
    dealer.linger = 0
    dealer.connect(api.endpoint)
    codes: dict[str, int] = {}
    try:
        for expected, frames in _fuzz_messages(random.Random(7), 1000):
            dealer.send_multipart([b"", *frames])
            assert dealer.poll(20_000), f"no reply to {frames[0][:80]!r} ({expected})\n{daemon.log_tail()}"
            reply_frames = dealer.recv_multipart()
            assert reply_frames[0] == b"", "the reply keeps the envelope"
            reply = parse_reply(reply_frames[-1])
            if expected != "any":
                assert reply.type == "error", f"{frames[0][:80]!r} was accepted: {reply}"
                assert reply.message
                assert reply.code == expected, f"{frames[0][:80]!r}: {reply.code} ({reply.message}), expected {expected}"
            codes[getattr(reply, "code", reply.type)] = codes.get(getattr(reply, "code", reply.type), 0) + 1
        # frames without any delimiter (a DEALER that speaks raw) are answered too
        dealer.send(b"not json")
        assert dealer.poll(20_000)
        assert parse_reply(dealer.recv_multipart()[-1]).code == "bad-message"
    finally:
        dealer.close()
        context.term()
    assert daemon.process.poll() is None, "the daemon died"
    with api.client() as client:
        assert client.ping().type == "pong"
        assert client.list().counts.get("queued", 0) == 0, "no fuzzed message became a job"
    assert codes.get("internal", 0) == 0, f"internal errors: {codes}"
    assert set(codes) >= {"bad-message", "unsupported-version", "invalid", "too-large"}


def test_a_client_that_never_reads_does_not_block_the_server(served):
    api, _ = served
    context = zmq.Context()
    hog = context.socket(zmq.DEALER)
    hog.linger = 0
    hog.rcvhwm = 1
    hog.connect(api.endpoint)
    try:
        ping = Ping().model_dump_json().encode()
        for _ in range(5000):
            hog.send_multipart([b"", ping])  # never reads a reply
        with api.client(timeout=10.0, retries=0) as client:
            started = time.monotonic()
            for _ in range(20):
                client.ping()
            assert time.monotonic() - started < 10
    finally:
        hog.close()
        context.term()


# -- the job life cycle over the API -------------------------------------------------------------
def test_submit_wait_status_list_cancel_over_the_api(served):
    api, _ = served
    with api.client() as client:
        updates = []
        submitted = client.submit(api.segment("life"), job_id="life-1")
        assert submitted.created and submitted.job.id == "life-1" and submitted.job.source == "zmq"
        final = client.wait("life-1", on_update=lambda job: updates.append((job.state, job.progress)), timeout=300)
        assert final.state == "done" and final.result.outputs, final
        assert all(Path(p).exists() for p in final.result.outputs)
        assert updates[-1][0] == "done" and ("running", 1.0) in updates or any(s == "running" for s, _ in updates)
        again = client.submit(api.segment("life"), job_id="life-1")
        assert not again.created and again.job.state == "done", "the same id is the same job"
        assert client.status("life-1").state == "done"
        assert "life-1" in [j.id for j in client.list(states=["done"]).jobs]
        with pytest.raises(RequestRejected) as rejected:
            client.status("no-such-job")
        assert rejected.value.code == "not-found" and "no-such-job" in str(rejected.value)
        with pytest.raises(RequestRejected) as rejected:
            client.submit({**api.segment("seg"), "out": "/etc/membraind-out"})
        assert rejected.value.code == "invalid" and "outside" in str(rejected.value) and "out" in str(rejected.value)
        with pytest.raises(RequestRejected) as rejected:
            client.submit({"kind": "segment2d", "membrane": str(api.isbi), "out": str(api.home), "h": "high"})
        assert rejected.value.code == "invalid" and "h" in str(rejected.value)
        assert client.wait("life-1", timeout=10).state == "done", "a late follower gets the final state at once"


def test_models_lists_the_bundles_in_the_models_folder(served, trained_bundle):
    api, _ = served
    with api.client() as client:
        assert client.models() == []
        shutil.copytree(trained_bundle, api.home / "models" / "runs" / "membrane-v1" / "model")
        (api.home / "models" / "half-written").mkdir()
        (api.home / "models" / "half-written" / "model.json").write_text('{"name": "trunc')
        (model,) = client.models()
    meta = json.loads((trained_bundle / "model.json").read_text())
    assert model.name == meta["name"] and model.classes == meta["class_names"]
    assert model.path == str(api.home / "models" / "runs" / "membrane-v1" / "model")


def test_event_tracker_resyncs_on_a_gap_or_a_new_epoch():
    tracker = EventTracker("j")
    job = {"id": "j", "kind": "predict", "spec": {}, "priority": 10, "source": "zmq", "client": None,
           "state": "running", "progress": 0.1, "message": "m", "result": None, "error": None, "attempts": 1,
           "cancel_requested": False, "created": 0.0, "started": 0.0, "finished": None, "updated": 0.0}  # fmt: skip
    info = tracker.snapshot(JobStatus.model_validate({"job": job, "epoch": "e1", "seq": 4}))

    def event(seq: int, epoch: str = "e1", progress: float = 0.5) -> Event:
        return Event(job_id="j", epoch=epoch, seq=seq, kind="predict", state="running", progress=progress, message="m", time=0)

    assert not tracker.needs_resync(event(3)) and tracker.apply(info, event(3)) == info, "old news changes nothing"
    assert not tracker.needs_resync(event(5))
    info = tracker.apply(info, event(5, progress=0.6))
    assert info.progress == 0.6 and tracker.seq == 5 and tracker.changed
    assert tracker.needs_resync(event(7)), "seq 6 was missed"
    assert tracker.needs_resync(event(6, epoch="e2")), "the daemon restarted"


# -- the daemon restarted while a client waits -------------------------------------------------
class _Submitter(threading.Thread):
    def __init__(self, client: Client, spec: dict, job_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.spec, self.job_id = client, spec, job_id
        self.reply, self.error = None, None

    def run(self) -> None:
        try:
            self.reply = self.client.submit(self.spec, job_id=self.job_id)
        except Exception as exc:  # reported by the test
            self.error = exc


def _locked_journal(api: Api) -> sqlite3.Connection:
    """Hold the journal's write lock, so the daemon receives a submission but cannot record it yet."""
    db = sqlite3.connect(api.home / "state" / "journal.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    return db


def test_restart_while_a_client_waits_resend_makes_one_job(tmp_path, isbi):
    api = Api(tmp_path, isbi)
    daemon = api.supervised().start()
    client = api.client(timeout=1.0, retries=60)
    try:
        # 1. The daemon dies holding the request unrecorded; the resend reaches the restarted daemon.
        lock = _locked_journal(api)
        submitter = _Submitter(client, api.segment("restart"), "restart-1")
        submitter.start()
        harness.wait_until(lambda: client.resends >= 1, 60, what="the client to time out and resend")
        daemon.kill()
        lock.rollback()
        lock.close()
        daemon = api.supervised().start()
        submitter.join(120)
        assert submitter.error is None and submitter.reply is not None, submitter.error
        count, events = api.journal_rows("restart-1")
        assert count == 1 and [e[3] for e in events].count("queued") == 1, events

        # 2. The daemon records the first copy while the client has given up on it: the resend finds that job.
        lock = _locked_journal(api)
        resends = client.resends
        submitter = _Submitter(client, api.segment("dedupe"), "dedupe-1")
        submitter.start()
        harness.wait_until(lambda: client.resends > resends, 60, what="the client to resend")
        lock.rollback()
        lock.close()
        submitter.join(120)
        assert submitter.error is None, submitter.error
        assert submitter.reply.job.id == "dedupe-1" and not submitter.reply.created, "the resend found the first copy's job"
        count, events = api.journal_rows("dedupe-1")
        assert count == 1 and [e[3] for e in events].count("queued") == 1, events
        assert client.wait("dedupe-1", timeout=300).state == "done"
    finally:
        client.close()
        daemon.stop()


# -- CurveZMQ -------------------------------------------------------------------------------------
def test_curve_admits_known_keys_only_and_records_who_submitted(tmp_path, isbi):
    keys, admitted = tmp_path / "keys", tmp_path / "authorized"
    generate_keys(keys, "server")
    _, alice = generate_keys(keys, "alice")
    _, mallory = generate_keys(keys, "mallory")
    bob_public, bob = generate_keys(keys, "bob")
    admitted.mkdir()
    (admitted / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    api = Api(tmp_path, isbi, {"service": {"api": {"server_key": keys / "server.key_secret", "authorized_keys": admitted}}})
    server = keys / "server.key"
    with api.supervised():
        with api.client(server_key=server, key=alice) as client:
            submitted = client.submit(api.segment("curve"), job_id="curve-1")
            assert submitted.job.client.startswith("alice (key ") and submitted.job.client.endswith(")")
            assert client.wait("curve-1", timeout=300).state == "done", "events reach an admitted key"
        for kw in ({"server_key": server, "key": mallory}, {}):  # an unknown key, and no key at all
            with api.client(timeout=1.0, retries=1, **kw) as stranger:
                started = time.monotonic()
                with pytest.raises(DaemonUnreachable):
                    stranger.ping()
                assert time.monotonic() - started < 10, "an unknown key times out cleanly"
        (admitted / "bob.key").write_bytes(bob_public.read_bytes())  # admitted while the daemon runs

        def bob_gets_in() -> bool:
            with api.client(timeout=1.0, retries=0, server_key=server, key=bob) as client:
                try:
                    return client.ping().type == "pong"
                except DaemonUnreachable:
                    return False

        harness.wait_until(bob_gets_in, 60, what="a newly added key to be admitted")


def test_a_port_in_use_stops_the_start_with_the_reason(tmp_path, isbi):
    context = zmq.Context()
    squatter = context.socket(zmq.REP)
    squatter.bind(f"ipc://{tmp_path}/api.sock")
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    squatter.linger = 0
    try:
        api = Api(tmp_path, isbi, {"service": {"api": {"endpoint": f"tcp://127.0.0.1:{port}"}}})
        daemon = api.supervised()
        with pytest.raises(RuntimeError, match="did not become ready"):
            daemon.start(ready_timeout=120)
        assert f"cannot listen on tcp://127.0.0.1:{port}" in api.log.read_text()
        assert daemon.process.returncode not in (None, 0) or daemon.process.wait(30) != 0
    finally:
        squatter.close()
        context.term()
