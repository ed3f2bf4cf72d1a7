"""How queue messages are written: JSON, signed with HMAC-SHA256 when a secret is set.

Huey's own serializer pickles, and unpickling a message is running its code: fine for a
file only this daemon writes, not for a Redis server on the network (docs/design-notes.md,
"Paths and trust"). A membraind message only ever carries a job id, so JSON holds it; with a secret,
a message that was not signed with it (forged, or from another cluster's secret) is
refused before it is even parsed. Nothing is ever unpickled.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
from pathlib import Path

from huey.registry import Message
from huey.serializer import Serializer

from membraind.errors import ConfigError

__all__ = ["JsonMessageSerializer", "BadQueueMessage", "read_secret", "write_secret", "MIN_SECRET_BYTES"]

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 16
_DATETIME = "$datetime"


class BadQueueMessage(ValueError):
    """A queue message that is not signed with our secret, or is not a membraind message."""


def _encode(value: object) -> object:
    if isinstance(value, datetime.datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    raise TypeError(f"a queue message can only carry JSON values, not {type(value).__name__}")


def _decode(value: object) -> object:
    if isinstance(value, dict) and set(value) == {_DATETIME}:
        return datetime.datetime.fromisoformat(value[_DATETIME])
    return value


class JsonMessageSerializer(Serializer):
    """A Huey serializer for task messages: JSON, HMAC-signed when ``secret`` is given."""

    def __init__(self, secret: bytes | None = None) -> None:
        super().__init__()
        self._secret = secret

    def _signature(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()

    def _serialize(self, data: object) -> bytes:
        if not isinstance(data, Message):
            raise TypeError(f"only task messages go through the queue, not {type(data).__name__}")
        body = json.dumps({name: _encode(getattr(data, name)) for name in Message._fields}, separators=(",", ":"))
        body_bytes = body.encode()
        return self._signature(body_bytes) + b"." + body_bytes if self._secret else body_bytes

    def _deserialize(self, data: bytes) -> Message:
        if self._secret:
            signature, dot, data = data.partition(b".")
            if not dot or not hmac.compare_digest(signature, self._signature(data)):
                raise BadQueueMessage("a queue message was not signed with this cluster's secret (forged, or another "
                                      "cluster's); it was dropped. Every host needs the same [service.queue] secret_file")  # fmt: skip
        try:
            fields = json.loads(data)
            values = {name: _decode(fields.get(name)) for name in Message._fields}
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadQueueMessage(f"a queue message is not a membraind message ({exc}); it was dropped") from None
        if isinstance(values["args"], list):
            values["args"] = tuple(values["args"])
        return Message(**values)


def read_secret(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace ignored); ConfigError saying what is wrong."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"[service.queue] secret_file {path}: cannot be read ({exc.strerror}); make one with "
                          f"`membraind secret {path}` and copy it to every host") from None  # fmt: skip
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"[service.queue] secret_file {path}: holds {len(secret)} bytes; a secret needs at least "
                          f"{MIN_SECRET_BYTES} (`membraind secret {path}` makes a good one)")  # fmt: skip
    return secret


def write_secret(path: Path) -> None:
    """Write a new random secret to ``path`` (readable by its owner only); refuses to overwrite."""
    import os
    import secrets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a new secret would lock out every host using it. Remove it first "
                          "if that is what you want") from None  # fmt: skip
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
