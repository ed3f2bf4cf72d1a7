"""The request folder: users drop ``*.json`` or ``*.toml`` files describing jobs.

A valid file moves to ``accepted/`` and gets a ``<name>.status.json`` beside it that
follows the job; an invalid one moves to ``rejected/`` with a ``<name>.error.txt``
naming the field at fault and what is allowed. Nothing dropped here is ever lost or
left without an answer. See docs/requests.md for the format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from membraind.atomic import write_text_atomic
from membraind.errors import MembraindError, describe_validation_error
from membraind.jobs.specs import SPEC_TYPES
from membraind.service.jobs import Job, JobRecord, parse_spec
from membraind.service.watchers.folder import FolderWatcher

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RequestFolder", "read_request", "RequestError", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
# tomllib needs memory quadratic in the length of a dotted key (a.b.c... = 1): 80 kB of
# them take gigabytes. No request comes near this many dots.
MAX_TOML_DOTS = 2000
SOURCE = "request-file"
HELP = "see docs/requests.md for the request format and an example of every job kind"


class RequestError(MembraindError):
    """A request file that cannot become a job (the message says why)."""


def read_request(path: Path) -> Job:
    """The job a request file describes, or a :class:`RequestError` saying what is wrong."""
    raw = path.read_bytes()
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"the file is {len(raw)} bytes; requests are at most {MAX_REQUEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the file is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON or TOML") from None
    if path.suffix.lower() != ".json" and text.count(".") > MAX_TOML_DOTS:
        raise RequestError(f"the file holds {text.count('.')} dots; a TOML request has at most {MAX_TOML_DOTS} "
                           "(no dotted keys this long)")  # fmt: skip
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise RequestError(f"the file is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the file must hold one object (a table of fields), not a {type(data).__name__}")
    job_id = data.pop("id", None)
    priority = data.pop("priority", None)
    try:
        spec = parse_spec(data)
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc)}{_allowed(data, exc)}") from None
    field = _unusable_text(spec.model_dump(), "")
    if field is not None:
        raise RequestError(f"invalid request: {field}: holds a NUL character (in a path) or an escaped lone surrogate "
                           "such as \\ud800 (not a character); neither can be a file name or be stored")  # fmt: skip
    try:
        return Job(
            **({"id": job_id} if job_id is not None else {}), spec=spec, priority=priority, source=SOURCE,
        )  # fmt: skip
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc)}") from None


def _unusable_text(value: object, where: str) -> str | None:
    """The field of a dumped spec holding a lone surrogate (JSON lets "\\ud800" through), or a path holding NUL."""
    if isinstance(value, dict):
        items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        if isinstance(value, Path) and "\0" in str(value):
            return where
        try:
            str(value).encode("utf-8") if isinstance(value, (str, Path)) else None
        except UnicodeEncodeError:
            return where
        return None
    for key, item in items:
        found = _unusable_text(item, key)
        if found is not None:
            return found
    return None


def _allowed(data: dict, exc: ValidationError) -> str:
    """For unknown fields or kinds: what is allowed instead."""
    types = {spec.model_fields["kind"].default: spec for spec in SPEC_TYPES}
    kind = data.get("kind")
    spec_type = types.get(kind) if isinstance(kind, str) else None
    if spec_type is None:
        return f" (kind must be one of: {', '.join(types)})"
    if any(e["type"] == "extra_forbidden" for e in exc.errors()):
        return f" (fields of a {data['kind']} request: {', '.join(f for f in spec_type.model_fields)}, plus id and priority)"
    return ""


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
        """Accept or reject one request file; always True (a bad file gets an answer, not a retry)."""
        try:
            job = read_request(path)
            self.accepted.mkdir(exist_ok=True)
            target = _free_name(self.accepted, path.name)
            job = job.model_copy(update={"client": str(target)})
            record, created = self.submit(job)
        except FileNotFoundError:
            return True  # taken away again before we looked
        except (MembraindError, OSError) as exc:
            self._reject(path, str(exc))
            return True
        path.replace(target)
        write_status(target, record, note=None if created else f"job id {record.id} was submitted before; this is its status")
        log.info("request %s accepted as job %s", path.name, record.id)
        return True

    def _reject(self, path: Path, reason: str) -> None:
        self.rejected.mkdir(exist_ok=True)
        target = _free_name(self.rejected, path.name)
        try:
            path.replace(target)
        except FileNotFoundError:
            return
        write_text_atomic(target.with_name(target.name + ".error.txt"), f"{path.name}: {reason}\n\n{HELP}\n")
        log.warning("request %s rejected: %s", path.name, reason)

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
