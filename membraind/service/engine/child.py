"""The engine process itself: runs jobs one at a time, keeping models loaded between them.

Started with ``spawn`` (never fork: the daemon holds threads, and CUDA does not survive
a fork). It reads :data:`~membraind.service.engine.messages.Command` s from one pipe and
writes :data:`~membraind.service.engine.messages.EngineEvent` s to the other (JSON, no
pickle): ``ready`` once, then per job any number of ``progress`` and one of ``done``,
``cancelled`` or ``error``.

When the daemon goes away (its end of the command pipe closes) the process exits at
once, so a killed daemon never leaves an engine behind still writing.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Union

from membraind.service.engine.messages import (
    CancelCommand, CancelledEvent, DoneEvent, ErrorEvent, ExitCommand, ProgressEvent, ReadyEvent, RunCommand, encode,
    parse_command,
)  # fmt: skip

__all__ = ["engine_main", "models_device"]

# What the reader hands the job loop: a job to run, a command that did not parse (reported
# as that job's error), or None (exit).
_Work = Union[RunCommand, Exception, None]


def _reader(commands: Connection, jobs: queue.Queue[_Work], cancel: threading.Event) -> None:
    while True:
        try:
            raw = commands.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)  # the daemon is gone: stop now rather than finish work nobody will record
        try:
            command = parse_command(raw)
        except ValueError as exc:  # pydantic's ValidationError: a job this code cannot read
            jobs.put(exc)
            continue
        if isinstance(command, RunCommand):
            cancel.clear()
            jobs.put(command)
        elif isinstance(command, CancelCommand):
            cancel.set()
        elif isinstance(command, ExitCommand):
            cancel.set()
            jobs.put(None)


def models_device(settings) -> str:
    """Where this engine's predictions and training run, for a person: one device, or one for each."""
    from membraind.nn.device import describe_device  # imports torch (about 1.5 s on a 2-core machine)

    predict, training = describe_device(settings.predict.device), describe_device(settings.training.device)
    return predict if predict == training else f"{predict} for predictions, {training} for training"


def engine_main(commands: Connection, events: Connection, settings_json: str, log_level: int = logging.INFO,
                runs_models: bool = True) -> None:  # fmt: skip
    """Entry point of the engine process; ``runs_models``: it predicts and trains (the gpu queue's
    engine), so it finds out on which device, importing torch before it is ready."""
    logging.basicConfig(level=log_level, format="%(levelname)s engine %(name)s: %(message)s")
    from membraind_client.progress import Progress

    from membraind.config import Settings
    from membraind.errors import Cancelled, MembraindError
    from membraind.jobs.execute import ModelCache, run_job

    lock = threading.Lock()

    def send(message) -> None:
        with lock:
            events.send_bytes(encode(message))

    def progress(report: Progress) -> None:
        send(ProgressEvent(progress=report))

    settings = Settings.model_validate_json(settings_json)
    cache = ModelCache()
    jobs: queue.Queue[_Work] = queue.Queue()
    cancel = threading.Event()
    threading.Thread(target=_reader, args=(commands, jobs, cancel), name="engine-commands", daemon=True).start()
    send(ReadyEvent(pid=os.getpid(), device=models_device(settings) if runs_models else None))
    while (work := jobs.get()) is not None:
        started = time.monotonic()
        try:
            if isinstance(work, Exception):
                raise work
            result = run_job(work.job.spec, settings, progress, cancel.is_set, cache)
            result.seconds = round(time.monotonic() - started, 4)
            send(DoneEvent(result=result))
        except Cancelled as exc:
            send(CancelledEvent(message=str(exc)))
        except MembraindError as exc:
            send(ErrorEvent(message=str(exc), retry=False))
        except Exception as exc:  # a bug, a CUDA error, out of memory: worth another try
            logging.getLogger(__name__).error("job failed:\n%s", traceback.format_exc())
            send(ErrorEvent(message=f"{type(exc).__name__}: {exc}", retry=True))
