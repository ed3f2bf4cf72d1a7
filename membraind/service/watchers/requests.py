"""The request folder: users drop ``*.json`` or ``*.toml`` files describing jobs.

A valid file moves to ``accepted/`` and gets a ``<name>.status.json`` beside it that
follows the job; an invalid one moves to ``rejected/`` with a ``<name>.error.txt``
naming the field at fault and what is allowed. Nothing dropped here is ever lost or
left without an answer. See docs/requests.md for the format.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from membraind_client.requestfile import MAX_REQUEST_BYTES, RequestFileError, load_request_file

from membraind.atomic import write_text_atomic
from membraind.errors import MembraindError
from membraind.service.job import FINAL_STATES, Job, JobRecord, RequestError, job_from_request
from membraind.service.watchers.folder import FolderWatcher, TryLater

__all__ = ["RequestFolder", "read_request", "RequestError", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

SOURCE = "request-file"
STATUS_SUFFIX = ".status.json"
PENDING_PREFIX, PENDING_SEPARATOR = ".submitting-", "#"
NAME_MAX = 255  # bytes in a file name (ext4, XFS; SMB shares)
# Names derived from a request's add up to 31 bytes (".status.json" and a temporary suffix)
# or 23 (a time stamp when the name is taken): the request's name must leave room for them.
LONGEST_NAME = NAME_MAX - 31 - 23
HELP = "see docs/requests.md for the request format and an example of every job kind"


def read_request(path: Path) -> Job:
    """The job a request file describes, or a :class:`RequestError` saying what is wrong."""
    try:
        data = load_request_file(path)
    except RequestFileError as exc:
        raise RequestError(str(exc)) from None
    return job_from_request(data, source=SOURCE)


def _free_name(folder: Path, name: str, reserved: set[str] | frozenset[str] = frozenset()) -> Path:
    target = folder / name
    if not target.exists() and name not in reserved:
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6:06d}{suffix}"


def status_path(accepted_file: Path) -> Path:
    """The status file that follows the job of an accepted request file."""
    return accepted_file.with_name(accepted_file.name + STATUS_SUFFIX)


def _longest_name(job_id: str) -> int:
    """The longest file name (bytes) a request with ``job_id`` may have."""
    return min(LONGEST_NAME, NAME_MAX - len(PENDING_PREFIX) - len(job_id) - len(PENDING_SEPARATOR) - 23)


def _shortened(name: str) -> str:
    """``name``, cut where it is too long to be given an error file beside it."""
    raw = os.fsencode(name)
    if len(raw) <= LONGEST_NAME:
        return name
    return os.fsdecode(raw[:100]) + "..." + Path(name).suffix[:10]


def _cannot_move(name: str, folder: Path, exc: OSError) -> str:
    return (f"request {name} cannot be moved to {folder} ({exc.strerror or exc}): the daemon's user needs to be able "
            f"to create and rename files there")


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
        self.waiting = False  # requests wait to be queued (the journal was away): see submit_waiting
        self._submitting = threading.Lock()  # the watcher's thread and the health loop's
        self._status_lock = threading.Lock()
        self.folder = FolderWatcher(
            "requests", self.path, self.handle, ["*.json", "*.toml"], recursive=False, polling=polling,
            poll_seconds=1.0, stable_seconds=0.5, rescan_seconds=rescan_seconds,
        )  # fmt: skip

    def handle(self, path: Path) -> bool:
        """Accept or reject one request file (a bad file gets an answer, not a retry).

        The file leaves the watched folder before its job is submitted, so that it can never
        be submitted twice: it waits in accepted/ under a hidden name holding the job's id
        until the journal has the job (see :meth:`submit_waiting`).
        """
        try:
            job = read_request(path)
        except FileNotFoundError:
            return True  # taken away again before we looked
        except (MembraindError, OSError) as exc:
            self._reject(path, str(exc))
            return True
        length, longest = len(os.fsencode(path.name)), _longest_name(job.id)
        if length > longest:
            self._reject(path, f"the file name is {length} bytes long, too long to be kept beside the job's id and "
                               f"status file: give it a name of at most {longest} bytes (plain letters are one byte "
                               "each) and drop it again")  # fmt: skip
            return True
        with self._submitting:
            try:
                self.accepted.mkdir(exist_ok=True)
                # Only requests that could not be queued keep a name reserved (set by _keep_waiting).
                reserved = self._reserved_names() if self.waiting else set()
                target = _free_name(self.accepted, path.name, reserved)
                pending = _pending_path(target, job.id)
                path.replace(pending)
            except FileNotFoundError:
                return True
            except OSError as exc:  # e.g. permissions on a share: keep the file and try again later
                raise TryLater(_cannot_move(path.name, self.accepted, exc)) from None
            self._submit(job, pending, target, path.name)
        return True

    def _reserved_names(self) -> set[str]:
        """The accepted names that requests waiting to be queued will take."""
        return {pending.name.partition(PENDING_SEPARATOR)[2] for pending in self.accepted.glob(PENDING_PREFIX + "*")}

    def _submit(self, job: Job, pending: Path, target: Path, name: str) -> bool:
        """Submit the job of the request waiting at ``pending``, then give the file its accepted name.

        Returns False when the journal cannot take it now: the request keeps waiting.
        """
        try:
            record, created = self.submit(job.model_copy(update={"client": str(target)}))
        except (MembraindError, OSError) as exc:
            return self._reject_waiting(pending, str(exc), name)
        except Exception as exc:  # the journal is away (Redis restarting, a lock held too long)
            return self._keep_waiting(f"request {name} cannot be queued now ({type(exc).__name__}: {exc}); it waits "
                                      f"in {pending} and is queued when the journal answers again")  # fmt: skip
        try:
            pending.replace(target)
        except OSError as exc:  # queued; resubmitting it under its id later only renames it
            return self._keep_waiting(_cannot_move(name, target.parent, exc))
        if not created and record.client != str(target):  # another request's job: a snapshot of it, saying so
            write_status(target, record, note=f"job id {record.id} was submitted before; this is its status")
        else:
            self.on_job(record)
        log.info("request %s accepted as job %s", name, record.id)
        return True

    def submit_waiting(self) -> None:
        """Submit the requests accepted but not yet in the journal, each under the job id it
        was given (so never twice): left by a crash, or by a journal that was away. Stops at
        the first the journal cannot take; the health loop calls it again while any wait."""
        with self._submitting:
            self.waiting = False
            for pending in sorted(self.accepted.glob(PENDING_PREFIX + "*")):
                job_id, _, name = pending.name[len(PENDING_PREFIX) :].partition(PENDING_SEPARATOR)
                try:
                    job = read_request(pending).model_copy(update={"id": job_id})
                except (MembraindError, OSError) as exc:  # changed by hand meanwhile
                    if not self._reject_waiting(pending, str(exc), name):
                        return
                    continue
                target = self.accepted / name
                if target.exists():  # a file put there by hand meanwhile
                    target = _free_name(self.accepted, name)
                if not self._submit(job, pending, target, name):
                    return

    def recover(self) -> None:
        """Start-up, before anything runs jobs: repair what a crash or SIGKILL left behind.

        Requests waiting to be queued are submitted; a status file that missed the job's
        last changes is brought up to date from the journal.
        """
        if not self.accepted.is_dir():
            return
        self.submit_waiting()
        for status in self.accepted.glob("*" + STATUS_SUFFIX):
            self._refresh(status)

    def _refresh(self, status: Path) -> None:
        try:
            shown = json.loads(status.read_text(encoding="utf-8"))
            job_id, state = str(shown["id"]), shown["state"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("status file %s is unreadable (%s); left as it is", status, exc)
            return
        if state in FINAL_STATES:
            return
        record = self.lookup(job_id)
        accepted_file = status.with_name(status.name[: -len(STATUS_SUFFIX)])
        # A status file of a duplicate request (another file's job) is a snapshot: left alone.
        if record is not None and status_data(record) != shown and record.client == str(accepted_file):
            self.on_job(record)

    def _reject_waiting(self, pending: Path, reason: str, name: str) -> bool:
        """Reject a request waiting to be queued; False when it cannot be moved now (it keeps waiting)."""
        try:
            self._reject(pending, reason, name)
        except TryLater as exc:
            return self._keep_waiting(str(exc))
        return True

    def _keep_waiting(self, why: str) -> bool:
        log.warning("%s; trying again in a few seconds", why)
        self.waiting = True
        return False

    def _reject(self, path: Path, reason: str, name: str | None = None) -> None:
        name = name or path.name
        try:
            self.rejected.mkdir(exist_ok=True)
            target = _free_name(self.rejected, _shortened(name))
            path.replace(target)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TryLater(_cannot_move(name, self.rejected, exc)) from None
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


TIME_FIELDS = ("created", "started", "finished", "updated")


def local_time(seconds: float | None) -> str | None:
    """``seconds`` since the epoch as ISO 8601 local time with its offset (what people read;
    milliseconds kept so that two changes within a second still differ)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def status_data(record: JobRecord) -> dict[str, Any]:
    """What a status file shows of a job: its record, times in ISO 8601."""
    data = record.model_dump(mode="json", exclude={"spec", "client", "source"})
    data.update({name: local_time(data[name]) for name in TIME_FIELDS})
    return data


def write_status(accepted_file: Path, record: JobRecord, note: str | None = None) -> None:
    """Write the job's state beside its accepted request file."""
    data = status_data(record)
    if note:
        data["note"] = note
    if accepted_file.exists():  # not before the request file is in place, nor after it was deleted
        write_text_atomic(status_path(accepted_file), json.dumps(data, indent=2) + "\n")
