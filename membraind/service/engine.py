"""The daemon's side of an engine process (design decision 3).

:meth:`EngineProcess.run` sends one job to the process and waits for it, forwarding
progress. A job that crashes the process, hangs (no progress for ``hang_seconds``) or
does not stop within ``cancel_grace`` of a cancel is ended by killing the process; a
fresh one is started for the next job, and the daemon itself stays up.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from typing import Callable

from membraind.jobs.execute import JobResult
from membraind.service.jobs import Job
from membraind.service.engine_worker import engine_main

__all__ = ["EngineProcess", "JobFailed", "JobCancelled"]

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A job ended with an error; ``retry`` says whether running it again may help."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class JobCancelled(Exception):
    """A job stopped because it was asked to (cancel, or the daemon stopping)."""


class EngineProcess:
    """One spawned engine process, restarted whenever a job has to be killed."""

    def __init__(self, name: str, settings_json: str, *, hang_seconds: float, cancel_grace: float,
                 start_timeout: float = 300.0) -> None:  # fmt: skip
        self.name, self.settings_json = name, settings_json
        self.hang_seconds, self.cancel_grace, self.start_timeout = hang_seconds, cancel_grace, start_timeout
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._commands = self._events = None
        self._lock = threading.Lock()  # one job at a time
        self.restarts = 0

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the process and wait until it is ready for jobs."""
        commands_r, commands_w = self._context.Pipe(duplex=False)
        events_r, events_w = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=engine_main, args=(commands_r, events_w, self.settings_json, logging.getLogger().level),
            name=f"membraind-{self.name}-engine", daemon=True,
        )  # fmt: skip
        self._process.start()
        commands_r.close()
        events_w.close()  # so that its death reads as EOF here
        self._commands, self._events = commands_w, events_r
        if not self._events.poll(self.start_timeout):
            self.kill()
            raise RuntimeError(f"the {self.name} engine process did not start within {self.start_timeout:.0f} s")
        message = json.loads(self._events.recv_bytes())
        log.info("%s engine process ready (pid %s)", self.name, message.get("pid"))

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
        """Ask the process to exit; kill it if it does not."""
        if self.alive():
            try:
                self._send({"op": "exit"})
            except OSError:
                pass
            self._process.join(timeout)
        self.kill()

    def _restart(self, why: str) -> None:
        log.warning("restarting the %s engine process: %s", self.name, why)
        self.kill()
        self.restarts += 1

    def _send(self, message: dict) -> None:
        self._commands.send_bytes(json.dumps(message).encode())

    # -- jobs -------------------------------------------------------------------------
    def run(
        self,
        job: Job,
        progress: Callable[[float, str], None],
        should_cancel: Callable[[], bool],
    ) -> JobResult:
        """Run ``job`` in the process; returns its result or raises JobFailed / JobCancelled."""
        with self._lock:
            if not self.alive():
                self.start()
            try:
                self._send({"op": "run", "job": job.model_dump(mode="json")})
            except OSError:
                self._restart("its command pipe broke")
                raise JobFailed("the engine process was not reachable; the job will be retried", retry=True) from None
            return self._wait(progress, should_cancel)

    def _wait(self, progress: Callable[[float, str], None], should_cancel: Callable[[], bool]) -> JobResult:
        last_sign = time.monotonic()
        cancel_sent: float | None = None
        while True:
            if self._events.poll(0.1):
                try:
                    message = json.loads(self._events.recv_bytes())
                except (EOFError, OSError):
                    self._process.join(5)
                    code = self._process.exitcode
                    self._restart(f"it exited (code {code}) during a job")
                    raise JobFailed(f"the engine process died while running the job (exit code {code})", retry=True) from None
                last_sign = time.monotonic()
                op = message["op"]
                if op == "progress":
                    progress(message["fraction"], message["message"])
                elif op == "done":
                    return JobResult.model_validate(message["result"])
                elif op == "cancelled":
                    raise JobCancelled(message["message"])
                elif op == "error":
                    raise JobFailed(message["message"], retry=message["retry"])
            now = time.monotonic()  # checked on every pass: a chatty job must still notice a cancel
            if cancel_sent is None and should_cancel():
                self._send({"op": "cancel"})
                cancel_sent = now
            if cancel_sent is not None and now - cancel_sent > self.cancel_grace:
                self._restart(f"the job did not stop within {self.cancel_grace:.0f} s of being cancelled")
                raise JobCancelled(f"stopped by ending the engine process after {self.cancel_grace:.0f} s")
            if now - last_sign > self.hang_seconds:
                self._restart(f"the job made no progress for {self.hang_seconds:.0f} s")
                raise JobFailed(f"the job made no progress for {self.hang_seconds:.0f} s and was stopped", retry=True)
