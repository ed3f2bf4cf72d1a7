"""The messages between the daemon and its engine process, typed.

Each travels over a :mod:`multiprocessing` pipe as one JSON object (never pickle: the
child must not run what a message would unpickle), told apart by ``op``:

- commands, daemon -> engine (:data:`Command`): ``run`` a job, ``cancel`` it, ``exit``;
- events, engine -> daemon (:data:`EngineEvent`): ``ready`` once started, then per job
  any number of ``progress`` and one of ``done``, ``cancelled`` or ``error``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter

from membraind_client.messages import JobResult
from membraind_client.progress import Progress

from membraind.service.job import Job
from membraind.strict import StrictModel

__all__ = [
    "RunCommand", "CancelCommand", "ExitCommand", "Command", "ReadyEvent", "ProgressEvent", "DoneEvent",
    "CancelledEvent", "ErrorEvent", "EngineEvent", "encode", "parse_command", "parse_engine_event",
]  # fmt: skip


# -- commands (daemon -> engine) --------------------------------------------------------------
class RunCommand(StrictModel):
    """Run this job (one at a time)."""

    op: Literal["run"] = "run"
    job: Job


class CancelCommand(StrictModel):
    """Stop the running job at its next safe point."""

    op: Literal["cancel"] = "cancel"


class ExitCommand(StrictModel):
    """Cancel the running job, if any, and exit."""

    op: Literal["exit"] = "exit"


Command = Annotated[Union[RunCommand, CancelCommand, ExitCommand], Field(discriminator="op")]


# -- events (engine -> daemon) ----------------------------------------------------------------
class ReadyEvent(StrictModel):
    """The engine has started and takes jobs; ``device`` says where its models run (for the log)."""

    op: Literal["ready"] = "ready"
    pid: int
    device: str | None = Field(
        None, description="where models run, e.g. 'cuda:0 (NVIDIA H200)' or 'cpu (no CUDA device)'; "
        "none from an engine that runs no models (the cpu queue's)"
    )  # fmt: skip


class ProgressEvent(StrictModel):
    """The running job made progress."""

    op: Literal["progress"] = "progress"
    progress: Progress


class DoneEvent(StrictModel):
    """The job finished."""

    op: Literal["done"] = "done"
    result: JobResult


class CancelledEvent(StrictModel):
    """The job stopped because it was asked to; ``message`` says how far it got."""

    op: Literal["cancelled"] = "cancelled"
    message: str


class ErrorEvent(StrictModel):
    """The job failed; ``retry`` says whether running it again may help."""

    op: Literal["error"] = "error"
    message: str
    retry: bool


EngineEvent = Annotated[
    Union[ReadyEvent, ProgressEvent, DoneEvent, CancelledEvent, ErrorEvent], Field(discriminator="op")
]

_COMMAND = TypeAdapter(Command)
_EVENT = TypeAdapter(EngineEvent)


def encode(message: Command | EngineEvent) -> bytes:
    """A message as the bytes sent over the pipe."""
    return message.model_dump_json().encode()


def parse_command(raw: bytes) -> RunCommand | CancelCommand | ExitCommand:
    """A command from its bytes (raises pydantic's ValidationError)."""
    return _COMMAND.validate_json(raw)


def parse_engine_event(raw: bytes) -> ReadyEvent | ProgressEvent | DoneEvent | CancelledEvent | ErrorEvent:
    """An event from its bytes (raises pydantic's ValidationError)."""
    return _EVENT.validate_json(raw)
