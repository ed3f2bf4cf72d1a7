"""The dispatcher and the engine process on real SQLite files (journal and Huey queue) and
real processes: restart on the first attempt only, stops that do not wait for an engine
to start, and jobs whose enqueue failed queued again by reconciliation."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from multiprocessing import resource_tracker, spawn
from pathlib import Path
from typing import Iterator

import pytest

from membraind.config import Settings
from membraind.errors import Cancelled
from membraind.harness import wait_until
from membraind.jobs.specs import ExportOnnxSpec, TrainSpec
from membraind.service.dispatcher import Dispatcher
from membraind.service.engine.process import EngineProcess
from membraind.service.job import Job
from membraind.service.journal import SqliteJournal
from membraind.service.queues import JobQueues, open_hueys
from membraind.service.runner import JobRunner

DEADLINE = 30.0  # generous: the point of the engine tests is "not 300 s"
WORKER = "test-host:serve"


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def make_dispatcher(tmp_path: Path, home: Path, queue_timeout: float = 30.0) -> Dispatcher:
    """A dispatcher on SQLite files in ``tmp_path`` (journal.db, queue.db)."""
    settings = Settings.model_validate({"service": {"home": str(home), "state_dir": str(tmp_path)}})
    journal = SqliteJournal(tmp_path / "journal.db")
    return Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service, queue_timeout)))


def make_runner(dispatcher: Dispatcher, engines: dict | None = None) -> JobRunner:
    """The runner an embedded worker uses, as WORKER."""
    return JobRunner(dispatcher.service, dispatcher.journal, engines or {}, WORKER, dispatcher.queues.enqueue_job,
                     dispatcher.notify)  # fmt: skip


@pytest.fixture
def dispatcher(tmp_path, home) -> Iterator[Dispatcher]:
    dispatcher = make_dispatcher(tmp_path, home, queue_timeout=0.2)
    yield dispatcher
    dispatcher.journal.close()


def export_job(home: Path, job_id: str) -> Job:
    return Job(id=job_id, spec=ExportOnnxSpec(bundle=home / "models" / job_id, out=home / f"{job_id}.onnx"))


def train_job(home: Path, job_id: str) -> Job:
    spec = TrainSpec(em=home / "gt" / "em", labels=home / "gt" / "labels", out=home / "runs" / job_id, restart=True)
    return Job(id=job_id, spec=spec)


# -- restart = true starts a run over on its first attempt only ---------------------------------------------------
def test_restart_holds_for_the_first_attempt_only(dispatcher, home):
    journal, runner = dispatcher.journal, make_runner(dispatcher)
    dispatcher.submit(train_job(home, "crash"))
    first = journal.claim("crash", WORKER, 30)
    assert first.attempts == 1 and runner.job_for_attempt(first).spec.restart is True
    journal.requeue("crash", "attempt 1 failed: the engine process died", WORKER)  # a retry after a crash
    second = journal.claim("crash", WORKER, 30)
    assert second.attempts == 2 and runner.job_for_attempt(second).spec.restart is False

    dispatcher.submit(train_job(home, "stopped"))
    journal.claim("stopped", WORKER, 30)
    journal.requeue("stopped", "interrupted by a daemon stop", WORKER, refund_attempt=True)  # the attempt does not count
    again = journal.claim("stopped", WORKER, 30)
    assert again.attempts == 1, "a graceful stop refunds the attempt"
    assert runner.job_for_attempt(again).spec.restart is False, "but the run had started: it resumes"

    dispatcher.submit(train_job(home, "killed"))
    journal.claim("killed", WORKER, 30)
    journal.recover(WORKER)  # the daemon was killed while it ran, then started again
    assert runner.job_for_attempt(journal.claim("killed", WORKER, 30)).spec.restart is False

    dispatcher.submit(export_job(home, "other"))  # jobs without restart pass through unchanged
    other = journal.claim("other", WORKER, 30)
    assert runner.job_for_attempt(other) == other.job()
    assert journal.get("crash").spec["restart"] is True  # the journal keeps the job as submitted


# -- stopping while an engine process starts ---------------------------------------------------------------------
@contextlib.contextmanager
def engine_interpreter(tmp_path: Path, body: str) -> Iterator[None]:
    """Spawn engine processes with a "Python" that runs the shell ``body`` instead: a real process
    that never becomes ready (as when CUDA initialisation hangs), or that exits at once."""
    script = tmp_path / "python-stand-in"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    resource_tracker.ensure_running()  # started now with the real interpreter, not the stand-in
    previous = spawn.get_executable()
    spawn.set_executable(str(script))
    try:
        yield
    finally:
        spawn.set_executable(previous)


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def run_in_thread(target) -> tuple[threading.Thread, list]:
    outcome: list = []

    def body() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def new_engine() -> EngineProcess:
    return EngineProcess("cpu", Settings().model_dump_json(), hang_seconds=600, cancel_grace=5)  # 300 s start timeout


def test_daemon_stop_does_not_wait_for_an_engine_that_is_starting(tmp_path, home):
    engine = new_engine()
    dispatcher = make_dispatcher(tmp_path, home)
    runner = make_runner(dispatcher, {"cpu": engine})
    try:
        dispatcher.submit(export_job(home, "export-1"))
        dispatcher.queues.flush()  # the queue's copy is not needed: the runner is called directly
        with engine_interpreter(tmp_path, "exec sleep 600"):
            worker, outcome = run_in_thread(lambda: runner.execute("export-1"))  # as a queue worker does
            pid = wait_until(lambda: engine.pid, DEADLINE, what="the engine process to be started")
            asked = time.monotonic()
            runner.stopping.set()  # what Daemon.stop does first
            worker.join(DEADLINE)
            took = time.monotonic() - asked
        assert not worker.is_alive(), "the queue worker still waits for the engine to start"
        assert outcome == [None] and took < 10, f"the stop took {took:.1f} s"
        assert wait_until(lambda: process_gone(pid), DEADLINE, what="the starting engine process to be killed")
        record = dispatcher.journal.get("export-1")
        assert record.state == "queued" and record.attempts == 0  # back in the queue; a stop is not an attempt
        assert [e[3] for e in dispatcher.journal.events("export-1")] == ["queued", "running", "queued"]
        assert "was starting" in dispatcher.journal.events("export-1")[-1][5]
        assert dispatcher.queues.job_ids() == {"export-1"}, "queued again at once, for any worker of the cluster"
    finally:
        engine.kill()
        dispatcher.journal.close()


def test_engine_stop_interrupts_a_start_in_another_thread(tmp_path, home):
    engine = new_engine()
    job = export_job(home, "export-2")
    try:
        with engine_interpreter(tmp_path, "exec sleep 600"):
            runner, outcome = run_in_thread(lambda: engine.run(job, lambda report: None, lambda: False))
            pid = wait_until(lambda: engine.pid, DEADLINE, what="the engine process to be started")
            asked = time.monotonic()
            engine.stop()
            runner.join(DEADLINE)
            took = time.monotonic() - asked
        assert not runner.is_alive() and took < 10, f"stop took {took:.1f} s"
        (error,) = outcome
        assert isinstance(error, Cancelled) and "starting" in str(error)
        assert process_gone(pid) and engine.pid is None
    finally:
        engine.kill()


def test_engine_that_exits_while_starting_is_reported_at_once(tmp_path):
    engine = new_engine()
    try:
        with engine_interpreter(tmp_path, "exit 3"):  # before it reads its arguments
            started = time.monotonic()
            with pytest.raises(RuntimeError, match=r"engine process for the cpu queue exited \(code 3\) while starting"):
                engine.start()
        assert time.monotonic() - started < 10
        assert engine.pid is None
    finally:
        engine.kill()


# -- journal -> queue reconciliation ------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``database`` from another connection (as a long transaction would)."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def test_a_job_whose_enqueue_fails_is_kept_and_queued_by_reconciliation(dispatcher, home, tmp_path, caplog):
    queues, journal = dispatcher.queues, dispatcher.journal
    with locked(tmp_path / "queue.db"):
        record, created = dispatcher.submit(export_job(home, "locked-out"))  # Huey: "database is locked"
    assert created and record.state == "queued"
    assert "recorded but could not be queued" in caplog.text and "database is locked" in caplog.text
    assert journal.get("locked-out").state == "queued"
    assert queues.pending() == {"gpu": 0, "cpu": 0}

    assert dispatcher.reconcile() == 0  # submitted just now: perhaps still on its way into Huey
    assert dispatcher.reconcile(min_age=0) == 1
    assert queues.pending() == {"gpu": 0, "cpu": 1} and queues.job_ids() == {"locked-out"}
    assert dispatcher.reconcile(min_age=0) == 0  # in Huey now: not queued twice


def test_reconcile_requeues_what_huey_lost_but_not_delayed_retries(dispatcher, home):
    queues, journal = dispatcher.queues, dispatcher.journal
    for name in ("a", "b", "retry"):
        dispatcher.submit(export_job(home, name))
    journal.claim("retry", WORKER, 30)
    journal.requeue("retry", "attempt 1 failed; retrying in 3600 s", WORKER, delay=3600)
    dispatcher.submit(export_job(home, "done"))
    journal.claim("done", WORKER, 30)
    queues.flush()  # Huey lost every task (the journal still says queued)
    assert queues.pending() == {"gpu": 0, "cpu": 0}

    assert dispatcher.reconcile(min_age=0) == 2
    assert queues.job_ids() == {"a", "b"}  # not the retry that waits for its delay, not the running job
    assert dispatcher.reconcile(min_age=0) == 0
    idle = make_dispatcher(home.parent / "idle", home)
    try:
        assert idle.reconcile(min_age=0) == 0  # an empty journal: nothing to compare
    finally:
        idle.journal.close()
