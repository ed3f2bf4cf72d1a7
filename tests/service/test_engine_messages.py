"""The typed messages between the daemon and its engine process, and the one cancellation
exception (no engine is started here)."""

from __future__ import annotations

import json

import pytest
from membraind_client.messages import JobResult
from membraind_client.progress import Progress
from pydantic import ValidationError

from membraind.errors import Cancelled, MembraindError
from membraind.jobs.specs import ExportOnnxSpec
from membraind.service.engine.messages import (
    CancelCommand, CancelledEvent, DoneEvent, ErrorEvent, ExitCommand, ProgressEvent, ReadyEvent, RunCommand, encode,
    parse_command, parse_engine_event,
)  # fmt: skip
from membraind.service.job import Job


def test_every_message_goes_over_the_pipe_as_json_and_comes_back_as_it_was():
    job = Job(id="j1", spec=ExportOnnxSpec(bundle="/data/b"), source="test")
    commands = [RunCommand(job=job), CancelCommand(), ExitCommand()]
    for command in commands:
        raw = encode(command)
        assert json.loads(raw)["op"] == command.op  # JSON with its op, never pickle
        assert parse_command(raw) == command
    events = [
        ReadyEvent(pid=12), ReadyEvent(pid=13, device="cuda:0 (NVIDIA H200)"), ProgressEvent(progress=Progress(phase="predicting", fraction=0.5, current=1, total=2,
                                                            unit="tile", message="tile 1/2")),
        DoneEvent(result=JobResult(outputs=["/out/a"], summary="done")), CancelledEvent(message="cancelled at tile 1"),
        ErrorEvent(message="bad input", retry=False),
    ]  # fmt: skip
    for event in events:
        assert parse_engine_event(encode(event)) == event


@pytest.mark.parametrize("raw", [b'{"op": "run"}', b'{"op": "launch"}', b'{"op": "cancel", "now": true}', b"[]"])
def test_a_malformed_or_unknown_message_is_rejected(raw):
    with pytest.raises(ValidationError):
        parse_command(raw)


def test_cancelled_stands_apart_from_the_errors():
    from membraind.nn.trainer import TrainingCancelled
    from membraind.predict.pipeline import PredictionCancelled
    from membraind.segment.run import SegmentationCancelled

    assert not issubclass(Cancelled, MembraindError), "stopping on request is not an input or configuration error"
    assert all(issubclass(kind, Cancelled) for kind in (TrainingCancelled, PredictionCancelled, SegmentationCancelled))
