"""The job journal's state machine, leases and reads, on both backends: a real SQLite file
and a real Redis server. Every test runs on each; they must behave the same."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from membraind_client.progress import Progress

from membraind.harness import wait_until
from membraind.jobs.execute import JobResult
from membraind.jobs.specs import ExportOnnxSpec
from membraind.service.job import Job
from membraind.service.journal import SqliteJournal
from membraind.service.journal.redis import RedisJournal

A, B = "host-a:gpu0", "host-b:gpu0"


@pytest.fixture(params=["sqlite", "redis"])
def journal(request, tmp_path):
    if request.param == "sqlite":
        journal = SqliteJournal(tmp_path / "journal.db")
    else:
        journal = RedisJournal(request.getfixturevalue("redis_url"), "test:")
    yield journal
    journal.close()


def job(job_id: str, priority: int | None = None) -> Job:
    return Job(id=job_id, spec=ExportOnnxSpec(bundle=f"/data/{job_id}"), priority=priority, source="test")


def report(fraction: float, message: str, **fields) -> Progress:
    return Progress(phase="testing", fraction=fraction, message=message, **fields)


def states(journal, job_id: str) -> list[str]:
    return [event[3] for event in journal.events(job_id)]


def test_add_is_idempotent_and_lists_in_submission_order(journal):
    first, created = journal.add(job("one", priority=5))
    assert created and first.state == "queued" and first.priority == 5 and first.attempts == 0
    assert first.spec["bundle"] == "/data/one" and first.source == "test" and first.client is None
    again, created = journal.add(job("one", priority=9))
    assert not created and again.priority == 5, "a known id keeps its first submission"
    for name in ("two", "three"):
        journal.add(job(name))
    assert [r.id for r in journal.list()] == ["three", "two", "one"]
    assert [r.id for r in journal.list(oldest_first=True, limit=2)] == ["one", "two"]
    assert journal.counts() == {"queued": 3}
    assert journal.get("missing") is None and states(journal, "one") == ["queued"]


def test_exactly_one_of_many_racing_workers_claims_a_job(journal):
    journal.add(job("contested"))
    barrier, won = threading.Barrier(8), []

    def claim(index: int) -> None:
        barrier.wait()
        if journal.claim("contested", f"host:{index}", 30) is not None:
            won.append(index)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    record = journal.get("contested")
    assert record.state == "running" and record.worker == f"host:{won[0]}" and record.attempts == 1
    assert states(journal, "contested") == ["queued", "running"]


def test_only_the_holder_renews_ends_or_requeues_a_job(journal):
    journal.add(job("held"))
    journal.claim("held", A, 30)
    assert journal.renew("held", A, 30) and not journal.renew("held", B, 30)
    result = JobResult(outputs=["/out/x.png"], summary="1 tile")
    assert not journal.finish("held", result, B), "another worker cannot end it"
    assert not journal.requeue("held", "not mine", B)
    assert journal.get("held").state == "running"
    assert journal.finish("held", result, A)
    record = journal.get("held")
    assert record.state == "done" and record.progress == 1.0 and record.result == result and record.worker == A
    assert record.finished is not None and record.message == "1 tile"
    assert not journal.renew("held", A, 30), "a finished job has no lease"
    assert not journal.fail("held", "too late", A), "an ended job stays ended"


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_shut_out(journal):
    journal.add(job("slow"))
    journal.add(job("alive"))
    journal.claim("slow", A, 0.3)
    journal.claim("alive", B, 60)
    taken = wait_until(journal.expire_leases, 10, what="the lease to expire")
    assert [r.id for r in taken] == ["slow"]
    record = journal.get("slow")
    assert record.state == "queued" and record.attempts == 1, "a lost run counts as an attempt"
    assert "taken over" in record.message and A in record.message
    assert journal.get("alive").state == "running", "a renewed lease is kept"
    assert not journal.renew("slow", A, 30) and not journal.finish("slow", JobResult(), A)
    assert journal.claim("slow", B, 30).worker == B
    assert journal.finish("slow", JobResult(summary="done by B"), B)
    assert states(journal, "slow") == ["queued", "running", "queued", "running", "done"]
    assert [e[3] for e in journal.events("slow")].count("done") == 1


def test_release_gives_back_a_restarted_workers_jobs_and_honours_cancels(journal):
    for name in ("mine", "cancel-me", "theirs"):
        journal.add(job(name))
    journal.claim("mine", A, 60)
    journal.claim("cancel-me", A, 60)
    journal.claim("theirs", B, 60)
    assert journal.request_cancel("cancel-me").cancel_requested
    released = journal.release(A)
    assert [r.id for r in released] == ["mine"]
    assert journal.get("mine").state == "queued" and "interrupted" in journal.get("mine").message
    assert journal.get("cancel-me").state == "cancelled"
    assert journal.get("theirs").state == "running"
    assert [r.id for r in journal.recover(A)] == ["mine"], "recover: released and expired, then every queued job"


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_safe_point(journal):
    journal.add(job("waiting"))
    record = journal.request_cancel("waiting")
    assert record.state == "cancelled" and record.cancel_requested and record.finished is not None
    assert journal.claim("waiting", A, 30) is None, "a cancelled job is never started"
    journal.add(job("busy"))
    journal.claim("busy", A, 30)
    record = journal.request_cancel("busy")
    assert record.state == "running" and record.message == "cancelling" and journal.cancel_requested("busy")
    assert journal.cancelled("busy", "cancelled at tile 3", A)
    assert journal.get("busy").state == "cancelled"
    assert journal.request_cancel("nobody") is None


def test_requeue_with_delay_refund_and_due(journal):
    for name in ("retry", "stopped", "fresh"):
        journal.add(job(name))
    journal.claim("retry", A, 30)
    journal.requeue("retry", "attempt 1 failed; retrying in 3600 s", A, delay=3600)
    journal.claim("stopped", A, 30)
    journal.requeue("stopped", "interrupted by a stop", A, refund_attempt=True)
    assert journal.get("retry").attempts == 1 and journal.get("stopped").attempts == 0
    assert journal.not_before("retry") > time.time() + 3000
    assert [r.id for r in journal.due(time.time() + 1)] == ["stopped", "fresh"], "the delayed retry is not due"
    assert journal.due(time.time() - 3600) == [], "nothing unchanged for an hour"
    assert journal.runs("stopped") == 1


def test_progress_is_recorded_for_running_jobs_only_and_clamped(journal):
    journal.add(job("p"))
    journal.progress("p", report(0.5, "not started yet"))
    assert journal.get("p").progress == 0.0 and journal.get("p").progress_detail is None
    journal.claim("p", A, 30)
    journal.progress("p", report(1.7, "x" * 2000))
    record = journal.get("p")
    assert record.progress == 1.0 and len(record.message) == 500
    assert record.progress_detail.fraction == 1.0 and record.progress_detail.message == record.message


def test_the_structured_progress_is_kept_while_the_job_runs(journal):
    journal.add(job("s"))
    journal.claim("s", A, 30)
    sent = report(0.25, "tile 5/20", current=5, total=20, unit="tile", eta_seconds=12.5)
    journal.progress("s", sent)
    record = journal.get("s")
    assert record.progress_detail == sent and (record.progress, record.message) == (0.25, "tile 5/20")
    assert journal.requeue("s", "attempt 1 failed", A), "a change of state clears it: it described that run"
    assert journal.get("s").progress_detail is None
    journal.claim("s", A, 30)
    journal.progress("s", sent)
    assert journal.finish("s", JobResult(), A)
    assert journal.get("s").progress_detail is None and journal.get("s").progress == 1.0


def test_lists_by_state_and_counts(journal):
    for index in range(6):
        journal.add(job(f"j{index}"))
    journal.claim("j1", A, 30)
    journal.finish("j1", JobResult(), A)
    journal.claim("j3", A, 30)
    journal.fail("j3", "bad input", A)
    journal.claim("j4", A, 30)
    assert journal.counts() == {"queued": 3, "running": 1, "done": 1, "failed": 1}
    assert [r.id for r in journal.list(states=("done", "failed"))] == ["j3", "j1"]
    assert [r.id for r in journal.list(states=("queued", "running"), oldest_first=True)] == ["j0", "j2", "j4", "j5"]
    assert [r.id for r in journal.list(states=("queued",), limit=1)] == ["j5"]
    assert journal.get("j3").error == "bad input"
    seqs = [event[0] for event in journal.events()]
    assert seqs == sorted(seqs) and len(seqs) == 6 + 2 * 2 + 1


def test_changes_made_through_another_connection_are_followed_in_order(journal):
    journal.add(job("before"))
    position = journal.changes_position()
    other = SqliteJournal(journal.path) if isinstance(journal, SqliteJournal) else RedisJournal(journal.url, journal.prefix)
    try:  # another process: a worker
        for name in ("a", "b"):
            other.add(job(name))
        other.claim("a", A, 30)
        other.progress("a", report(0.5, "half way"))
        ids, position = journal.changes(position, block_ms=5000)
        assert ids == ["a", "b"], "each changed job once, in the order of its first change"
        assert other.renew("a", A, 30)
        assert journal.changes(position, block_ms=300) == ([], position), "a lease renewal is not a change"
        assert other.finish("a", JobResult(outputs=["/out/a.onnx"]), A)
        assert journal.changes(position, block_ms=5000)[0] == ["a"]
    finally:
        other.close()


def test_a_journal_written_before_leases_existed_opens_and_recovers(tmp_path):
    path = tmp_path / "journal.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL, priority INTEGER NOT NULL,
            source TEXT NOT NULL, client TEXT, state TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '', result TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0, created REAL NOT NULL,
            started REAL, finished REAL, updated REAL NOT NULL);
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, job_seq INTEGER NOT NULL,
            state TEXT NOT NULL, time REAL NOT NULL, detail TEXT NOT NULL DEFAULT '');
    """)  # the schema of membraind 0.x before leases
    spec = ExportOnnxSpec(bundle="/data/old").model_dump_json()
    old.execute("INSERT INTO jobs (id, kind, spec, priority, source, state, attempts, created, updated) "
                "VALUES ('old', 'export-onnx', ?, 0, 'cli', 'running', 1, 1, 1)", (spec,))  # fmt: skip
    old.commit()
    old.close()
    journal = SqliteJournal(path)
    try:
        assert journal.get("old").worker is None and journal.get("old").progress_detail is None
        assert [r.id for r in journal.recover("host:serve")] == ["old"], "a run without a lease counts as expired"
    finally:
        journal.close()


def test_the_sqlite_change_log_keeps_its_last_ten_thousand_rows(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.db")
    try:
        journal.add(job("busy"))
        journal.claim("busy", A, 30)
        for step in range(10_050):
            journal.progress("busy", report(step / 10_050, f"step {step}"))
        with sqlite3.connect(tmp_path / "journal.db") as db:
            (count, first, last) = db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM changes").fetchone()
        assert count == 10_000 and (first, last) == (10_052 - 9_999, 10_052)  # add, claim, then 10050 progress
    finally:
        journal.close()


def test_a_unique_start_of_an_id_finds_the_job_and_several_are_named(journal):
    from membraind.errors import InputError

    for job_id in ("scope-d715e51df35b622c7f0a", "scope-d7aa", "train-demo", "a.b", "train"):
        journal.add(job(job_id))
    assert journal.find("scope-d715").id == "scope-d715e51df35b622c7f0a"
    assert journal.find("train").id == "train", "a whole id wins over the ids it starts"
    assert journal.find("train-").id == "train-demo"
    assert journal.find("a.").id == "a.b"
    assert journal.find("a*") is None and journal.find("a?b") is None, "the prefix is taken literally, not as a pattern"
    assert journal.find("nothing") is None and journal.find("") is None
    with pytest.raises(InputError, match=r"'scope-d7' is the start of several job ids \(scope-d715e51df35b622c7f0a, "
                                         r"scope-d7aa\); give more of the id"):  # fmt: skip
        journal.find("scope-d7")
