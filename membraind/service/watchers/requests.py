"""The request folder: users drop ``*.json`` or ``*.toml`` files describing jobs.

A valid file moves to ``accepted/`` and gets a ``<name>.status.json`` beside it that
follows the job; an invalid one moves to ``rejected/`` with a ``<name>.error.txt``
naming the field at fault and what is allowed. Nothing dropped here is ever lost or
left without an answer. See docs/requests.md for the format.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from membraind_client.requestfile import MAX_REQUEST_BYTES, RequestFileError, load_request_file

from membraind.atomic import write_text_atomic
from membraind.errors import MembraindError
from membraind.service.jobs import Job, JobRecord, RequestError, job_from_request
from membraind.service.watchers.folder import FolderWatcher

__all__ = ["RequestFolder", "read_request", "RequestError", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

SOURCE = "request-file"
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
    return accepted_file.with_name(accepted_file.name + ".status.json")


class RequestFolder:
    """Turns request files dropped in ``folder`` into jobs through ``submit``."""

    def __init__(self, folder: Path, submit: Callable[[Job], tuple[JobRecord, bool]], *, polling: bool,
                 rescan_seconds: float) -> None:  # fmt: skip
        self.path = Path(folder)
        self.accepted, self.rejected = self.path / "accepted", self.path / "rejected"
        self.submit = submit
        self.folder = FolderWatcher(
            "requests", self.path, self.handle, ["*.json", "*.toml"], recursive=False, polling=polling,
            poll_seconds=1.0, stable_seconds=0.5, rescan_seconds=rescan_seconds,
        )  # fmt: skip

    def handle(self, path: Path) -> bool:
        """Accept or reject one request file (a bad file gets an answer, not a retry).

        The file is moved to accepted/ before its job is submitted, so that a file left
        behind can never be submitted twice; a refused submit moves it on to rejected/.
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
            path.replace(target)
        except FileNotFoundError:
            return True
        except OSError as exc:  # e.g. permissions on a share: keep the file and try again later
            log.warning("request %s cannot be moved to %s (%s); trying again later", path.name, self.accepted, exc)
            return False
        try:
            record, created = self.submit(job.model_copy(update={"client": str(target)}))
        except (MembraindError, OSError) as exc:
            self._reject(target, str(exc), name=path.name)
            return True
        write_status(target, record, note=None if created else f"job id {record.id} was submitted before; this is its status")
        log.info("request %s accepted as job %s", path.name, record.id)
        return True

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

    def on_job(self, record: JobRecord) -> None:
        """Dispatcher listener: keep the status file of a request-file job up to date."""
        if record is not None and record.source == SOURCE and record.client:
            write_status(Path(record.client), record)


def write_status(accepted_file: Path, record: JobRecord, note: str | None = None) -> None:
    """Write the job's state beside its accepted request file."""
    data = record.model_dump(mode="json", exclude={"spec", "client", "source"})
    if note:
        data["note"] = note
    if accepted_file.parent.is_dir():
        write_text_atomic(status_path(accepted_file), json.dumps(data, indent=2) + "\n")
