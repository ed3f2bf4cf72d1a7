"""The engine process: runs jobs one at a time, keeping models loaded between them.

Started with ``spawn`` (never fork: the daemon holds threads, and CUDA does not survive
a fork). It talks to the daemon over two pipes carrying JSON (no pickle):

- commands in: ``{"op": "run", "job": {...}}``, ``{"op": "cancel"}``, ``{"op": "exit"}``;
- events out: ``ready``, ``progress`` (fraction, message), and one of ``done`` (result),
  ``cancelled`` or ``error`` (message, whether a retry may help) per job.

When the daemon goes away (its end of the command pipe closes) the process exits at
once, so a killed daemon never leaves an engine behind still writing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import traceback
from multiprocessing.connection import Connection

__all__ = ["engine_main"]


def _reader(commands: Connection, jobs: "queue.Queue[dict | None]", cancel: threading.Event) -> None:
    while True:
        try:
            message = json.loads(commands.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the daemon is gone: stop now rather than finish work nobody will record
        if message.get("op") == "run":
            cancel.clear()
            jobs.put(message)
        elif message.get("op") == "cancel":
            cancel.set()
        elif message.get("op") == "exit":
            cancel.set()
            jobs.put(None)


def engine_main(commands: Connection, events: Connection, settings_json: str, log_level: int = logging.INFO) -> None:
    """Entry point of the engine process."""
    logging.basicConfig(level=log_level, format="%(levelname)s engine %(name)s: %(message)s")
    from membraind.config import Settings
    from membraind.errors import Cancelled, MembraindError
    from membraind.jobs.execute import ModelCache, run_job
    from membraind.service.job import Job

    lock = threading.Lock()

    def send(message: dict) -> None:
        with lock:
            events.send_bytes(json.dumps(message).encode())

    settings = Settings.model_validate_json(settings_json)
    cache = ModelCache()
    jobs: queue.Queue[dict | None] = queue.Queue()
    cancel = threading.Event()
    threading.Thread(target=_reader, args=(commands, jobs, cancel), name="engine-commands", daemon=True).start()
    send({"op": "ready", "pid": os.getpid()})
    while (message := jobs.get()) is not None:
        started = time.monotonic()
        try:
            job = Job.model_validate(message["job"])

            def progress(fraction: float, text: str) -> None:
                send({"op": "progress", "fraction": float(fraction), "message": str(text)})

            result = run_job(job.spec, settings, progress, cancel.is_set, cache)
            result.seconds = round(time.monotonic() - started, 4)
            send({"op": "done", "result": result.model_dump(mode="json")})
        except Cancelled as exc:
            send({"op": "cancelled", "message": str(exc)})
        except MembraindError as exc:
            send({"op": "error", "message": str(exc), "retry": False})
        except Exception as exc:  # a bug, a CUDA error, out of memory: worth another try
            logging.getLogger(__name__).error("job failed:\n%s", traceback.format_exc())
            send({"op": "error", "message": f"{type(exc).__name__}: {exc}", "retry": True})
