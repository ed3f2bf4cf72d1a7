"""The daemon's side of an engine process (docs/design-notes.md, "No fork: engines run in spawned processes").

:meth:`EngineProcess.run` sends one job to the process and waits for it, forwarding
progress. A job that crashes the process, hangs (no progress for ``hang_seconds``) or
does not stop within ``cancel_grace`` of a cancel is ended by killing the process; a
fresh one is started for the next job, and the daemon itself stays up. Starting a
process (importing PyTorch, initialising CUDA) can take minutes; a cancel or a stop
does not wait for it.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Callable, NoReturn

from membraind_client.progress import ProgressReporter

from membraind.errors import Cancelled
from membraind.jobs.execute import JobResult
from membraind.service.engine.child import engine_main
from membraind.service.engine.messages import (
    CancelCommand, CancelledEvent, DoneEvent, ErrorEvent, ExitCommand, ProgressEvent, ReadyEvent, RunCommand, encode,
    parse_engine_event,
)  # fmt: skip
from membraind.service.job import Job

__all__ = ["EngineProcess", "JobFailed"]

log = logging.getLogger(__name__)

START_POLL = 0.1  # seconds between looks at a starting process (ready? died? asked to stop?)


class JobFailed(Exception):
    """A job ended with an error; ``retry`` says whether running it again may help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class EngineProcess:
    """One spawned engine process, restarted whenever a job has to be killed."""

    def __init__(self, name: str, settings_json: str, *, hang_seconds: float, cancel_grace: float,
                 start_timeout: float = 300.0, runs_models: bool = False) -> None:  # fmt: skip
        """``name`` is the queue it serves; ``runs_models`` (the gpu queue's engine) makes the
        process find out, before it is ready, on which device models run (:attr:`device`)."""
        self.name, self.settings_json = name, settings_json
        self.runs_models = runs_models
        self.device: str | None = None  # where models run, as the process last said when it started
        self.hang_seconds, self.cancel_grace, self.start_timeout = hang_seconds, cancel_grace, start_timeout
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._commands = self._events = None
        self._lock = threading.Lock()  # one job at a time
        self._closing = threading.Event()  # stop() was called: a start or job in progress gives up
        self.restarts = 0

    # -- life cycle ---------------------------------------------------------------------
    def start(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Start the process and wait until it is ready for jobs.

        Raises :class:`~membraind.errors.Cancelled` (the process killed) as soon as ``should_stop()`` is
        true or :meth:`stop` is called, and RuntimeError when the process exits or is not
        ready within ``start_timeout``.
        """
        commands_r, commands_w = self._context.Pipe(duplex=False)
        events_r, events_w = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=engine_main,
            args=(commands_r, events_w, self.settings_json, logging.getLogger().level, self.runs_models),
            name=f"membraind-{self.name}-engine", daemon=True,
        )  # fmt: skip
        self._process.start()
        commands_r.close()
        events_w.close()  # so that its death reads as EOF here
        self._commands, self._events = commands_w, events_r
        deadline = time.monotonic() + self.start_timeout
        while not self._events.poll(START_POLL):  # in slices: a stop must not wait out the timeout
            if self._closing.is_set() or (should_stop is not None and should_stop()):
                self.kill()
                raise Cancelled(f"stopped while the engine process for the {self.name} queue was starting")
            if not self._process.is_alive():
                self._start_failed()
            if time.monotonic() > deadline:
                self._start_failed(f"did not start within {self.start_timeout:.0f} s")
        try:
            message = parse_engine_event(self._events.recv_bytes())
        except (EOFError, OSError):  # the pipe closed: it exited before it was ready
            self._start_failed()
        if not isinstance(message, ReadyEvent):
            self._start_failed(f"sent {message.op!r} instead of 'ready' while starting")
        self.device = message.device
        runs_on = f": models run on {message.device}" if message.device else ""
        log.info("engine process for the %s queue ready (pid %s)%s", self.name, message.pid, runs_on)

    def _start_failed(self, why: str | None = None) -> NoReturn:
        """Kill the process that did not start and raise RuntimeError saying ``why`` (default: how it exited)."""
        if why is None:
            self._process.join(5)  # it is exiting: wait for its exit code
            why = f"exited (code {self._process.exitcode}) while starting; see its log above"
        self.kill()
        raise RuntimeError(f"the engine process for the {self.name} queue {why}")

    def alive(self) -> bool:
        """Whether the process is running."""
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """The process id, while it runs."""
        return self._process.pid if self.alive() else None

    def kill(self) -> None:
        """Kill the process (its GPU memory is freed when it exits)."""
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.kill()
        self._process.join(10)
        for conn in (self._commands, self._events):
            conn.close()
        self._process = None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the process to exit; kill it if it does not.

        A start in progress gives up at once, and a running job is cancelled first (as by
        ``should_cancel``), so this waits at most ``cancel_grace`` for the job to stop.
        """
        self._closing.set()
        try:
            with self._lock:  # the start or job in another thread sees _closing and ends
                if self.alive():
                    try:
                        self._send(ExitCommand())
                    except OSError:
                        pass
                    self._process.join(timeout)
                self.kill()
        finally:
            self._closing.clear()  # stopped, not closed for good: a later run starts a fresh process

    def _restart(self, why: str) -> None:
        log.warning("restarting the engine process for the %s queue: %s", self.name, why)
        self.kill()
        self.restarts += 1

    def _send(self, message: RunCommand | CancelCommand | ExitCommand) -> None:
        self._commands.send_bytes(encode(message))

    # -- jobs -------------------------------------------------------------------------
    def run(
        self,
        job: Job,
        progress: ProgressReporter,
        should_cancel: Callable[[], bool],
    ) -> JobResult:
        """Run ``job`` in the process; returns its result or raises JobFailed / Cancelled."""
        def stop_asked() -> bool:
            return self._closing.is_set() or should_cancel()

        with self._lock:
            if not self.alive():
                self.start(stop_asked)
            try:
                self._send(RunCommand(job=job))
            except OSError:
                self._restart("its command pipe broke")
                raise JobFailed("the engine process was not reachable; the job will be retried", retry=True) from None
            return self._wait(progress, stop_asked)

    def _wait(self, progress: ProgressReporter, should_cancel: Callable[[], bool]) -> JobResult:
        last_sign = time.monotonic()
        cancel_sent: float | None = None
        while True:
            if self._events.poll(0.1):
                try:
                    message = parse_engine_event(self._events.recv_bytes())
                except (EOFError, OSError):
                    self._process.join(5)
                    code = self._process.exitcode
                    self._restart(f"it exited (code {code}) during a job")
                    raise JobFailed(f"the engine process died while running the job (exit code {code})", retry=True) from None
                last_sign = time.monotonic()
                if isinstance(message, ProgressEvent):
                    progress(message.progress)
                elif isinstance(message, DoneEvent):
                    return message.result
                elif isinstance(message, CancelledEvent):
                    raise Cancelled(message.message)
                elif isinstance(message, ErrorEvent):
                    raise JobFailed(message.message, retry=message.retry)
            now = time.monotonic()  # checked on every pass: a chatty job must still notice a cancel
            if cancel_sent is None and should_cancel():
                self._send(CancelCommand())
                cancel_sent = now
            if cancel_sent is not None and now - cancel_sent > self.cancel_grace:
                self._restart(f"the job did not stop within {self.cancel_grace:.0f} s of being cancelled")
                raise Cancelled(f"stopped by ending the engine process after {self.cancel_grace:.0f} s")
            if now - last_sign > self.hang_seconds:
                self._restart(f"the job made no progress for {self.hang_seconds:.0f} s")
                raise JobFailed(f"the job made no progress for {self.hang_seconds:.0f} s and was stopped", retry=True)
