"""The request folder: users drop ``*.json`` or ``*.toml`` files describing jobs.

A valid file moves to ``accepted/`` and gets a ``<name>.status.json`` beside it that
follows the job; an invalid one moves to ``rejected/`` with a ``<name>.error.txt``
naming the field at fault and what is allowed. Nothing dropped here is ever lost or
left without an answer. See docs/requests.md for the format.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from membraind_client.requestfile import MAX_REQUEST_BYTES, RequestFileError, load_request_file

from membraind.atomic import write_text_atomic
from membraind.errors import MembraindError
from membraind.service.jobs import FINAL_STATES, Job, JobRecord, RequestError, job_from_request
from membraind.service.watchers.folder import FolderWatcher

__all__ = ["RequestFolder", "read_request", "RequestError", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

SOURCE = "request-file"
STATUS_SUFFIX = ".status.json"
PENDING_PREFIX, PENDING_SEPARATOR = ".submitting-", "#"
HELP = "see docs/requests.md for the request format and an example of every job kind"


def read_request(path: Path) -> Job:
    """The job a request file describes, or a :class:`RequestError` saying what is wrong."""
    try:
        data = load_request_file(path)
    except RequestFileError as exc:
        raise RequestError(str(exc)) from None
    return job_from_request(data, source=SOURCE)


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6:06d}{suffix}"


def status_path(accepted_file: Path) -> Path:
    """The status file that follows the job of an accepted request file."""
    return accepted_file.with_name(accepted_file.name + STATUS_SUFFIX)


def _pending_path(target: Path, job_id: str) -> Path:
    """Where an accepted request waits until the journal has its job (ids never hold the separator)."""
    return target.with_name(f"{PENDING_PREFIX}{job_id}{PENDING_SEPARATOR}{target.name}")


class RequestFolder:
    """Turns request files dropped in ``folder`` into jobs through ``submit``; ``lookup(job_id)``
    reads a job's record from the journal for its status file."""

    def __init__(self, folder: Path, submit: Callable[[Job], tuple[JobRecord, bool]],
                 lookup: Callable[[str], JobRecord | None], *, polling: bool, rescan_seconds: float) -> None:  # fmt: skip
        self.path = Path(folder)
        self.accepted, self.rejected = self.path / "accepted", self.path / "rejected"
        self.submit, self.lookup = submit, lookup
        self._status_lock = threading.Lock()
        self.folder = FolderWatcher(
            "requests", self.path, self.handle, ["*.json", "*.toml"], recursive=False, polling=polling,
            poll_seconds=1.0, stable_seconds=0.5, rescan_seconds=rescan_seconds,
        )  # fmt: skip

    def handle(self, path: Path) -> bool:
        """Accept or reject one request file (a bad file gets an answer, not a retry).

        The file leaves the watched folder before its job is submitted, so that it can never
        be submitted twice: it waits in accepted/ under a hidden name holding the job's id
        until the journal has the job (see :meth:`recover` for a stop in between).
        """
        try:
            job = read_request(path)
        except FileNotFoundError:
            return True  # taken away again before we looked
        except (MembraindError, OSError) as exc:
            self._reject(path, str(exc))
            return True
        try:
            self.accepted.mkdir(exist_ok=True)
            target = _free_name(self.accepted, path.name)
            pending = _pending_path(target, job.id)
            path.replace(pending)
        except FileNotFoundError:
            return True
        except OSError as exc:  # e.g. permissions on a share: keep the file and try again later
            log.warning("request %s cannot be moved to %s (%s); trying again later", path.name, self.accepted, exc)
            return False
        self._submit(job, pending, target, path.name)
        return True

    def _submit(self, job: Job, pending: Path, target: Path, name: str) -> None:
        """Submit the job of the request waiting at ``pending``, then give the file its accepted name."""
        try:
            record, created = self.submit(job.model_copy(update={"client": str(target)}))
        except (MembraindError, OSError) as exc:
            self._reject(pending, str(exc), name=name)
            return
        pending.replace(target)
        if not created and record.client != str(target):  # another request's job: a snapshot of it, saying so
            write_status(target, record, note=f"job id {record.id} was submitted before; this is its status")
        else:
            self.on_job(record)
        log.info("request %s accepted as job %s", name, record.id)

    def recover(self) -> None:
        """Start-up, before anything runs jobs: repair what a crash or SIGKILL left behind.

        A request accepted but not yet in the journal is submitted now (under the id it was
        given, so never twice); a status file that missed the job's last changes is brought
        up to date from the journal.
        """
        if not self.accepted.is_dir():
            return
        for pending in sorted(self.accepted.glob(PENDING_PREFIX + "*")):
            job_id, _, name = pending.name[len(PENDING_PREFIX):].partition(PENDING_SEPARATOR)
            try:
                job = read_request(pending).model_copy(update={"id": job_id})
            except (MembraindError, OSError) as exc:  # changed by hand meanwhile
                self._reject(pending, str(exc), name=name)
                continue
            log.warning("request %s was accepted as the daemon stopped; submitting its job %s now", name, job_id)
            self._submit(job, pending, _free_name(self.accepted, name), name)
        for status in self.accepted.glob("*" + STATUS_SUFFIX):
            self._refresh(status)

    def _refresh(self, status: Path) -> None:
        try:
            shown = json.loads(status.read_text(encoding="utf-8"))
            job_id, state, updated = str(shown["id"]), shown["state"], shown["updated"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("status file %s is unreadable (%s); left as it is", status, exc)
            return
        if state in FINAL_STATES:
            return
        record = self.lookup(job_id)
        accepted_file = status.with_name(status.name[: -len(STATUS_SUFFIX)])
        # A status file of a duplicate request (another file's job) is a snapshot: left alone.
        if record is not None and record.updated != updated and record.client == str(accepted_file):
            self.on_job(record)

    def _reject(self, path: Path, reason: str, name: str | None = None) -> None:
        name = name or path.name
        self.rejected.mkdir(exist_ok=True)
        target = _free_name(self.rejected, name)
        try:
            path.replace(target)
        except FileNotFoundError:
            return
        write_text_atomic(target.with_name(target.name + ".error.txt"), f"{name}: {reason}\n\n{HELP}\n")
        log.warning("request %s rejected: %s", name, reason)

    def on_job(self, record: JobRecord | None) -> None:
        """Dispatcher listener: keep the status file of a request-file job up to date.

        Threads announce changes in any order (the worker's, the request watcher's), so each
        write reads the journal afresh under a lock: the last write shows the last change.
        """
        if record is None or record.source != SOURCE or not record.client:
            return
        with self._status_lock:
            write_status(Path(record.client), self.lookup(record.id) or record)


def write_status(accepted_file: Path, record: JobRecord, note: str | None = None) -> None:
    """Write the job's state beside its accepted request file."""
    data = record.model_dump(mode="json", exclude={"spec", "client", "source"})
    if note:
        data["note"] = note
    if accepted_file.exists():  # not before the request file is in place, nor after it was deleted
        write_text_atomic(status_path(accepted_file), json.dumps(data, indent=2) + "\n")
