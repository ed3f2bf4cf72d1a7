"""Reading request files (``*.json`` or ``*.toml``), the same way for the daemon's request
folder and for ``membraind-client submit FILE``. See docs/requests.md for the format."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RequestFileError", "load_request_file", "parse_request_text", "MAX_REQUEST_BYTES", "MAX_TOML_DOTS"]

MAX_REQUEST_BYTES = 1 << 20
# tomllib needs memory quadratic in the length of a dotted key (a.b.c... = 1): 80 kB of
# them take gigabytes. No request comes near this many dots.
MAX_TOML_DOTS = 2000


class RequestFileError(ValueError):
    """A request file that cannot be read as one request (the message says why)."""


def load_request_file(path: Path) -> dict[str, Any]:
    """The fields of the request in ``path`` (JSON if it ends in .json, else TOML)."""
    return parse_request_text(Path(path).read_bytes(), "json" if Path(path).suffix.lower() == ".json" else "toml")


def parse_request_text(raw: bytes, fmt: str) -> dict[str, Any]:
    """The fields of a request given as JSON or TOML bytes (``fmt``: "json" or "toml")."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestFileError(f"the file is {len(raw)} bytes; requests are at most {MAX_REQUEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")  # Windows editors save a byte-order mark
    except UnicodeDecodeError as exc:
        raise RequestFileError(f"the file is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON or TOML") from None
    if fmt != "json" and text.count(".") > MAX_TOML_DOTS:
        raise RequestFileError(f"the file holds {text.count('.')} dots; a TOML request has at most {MAX_TOML_DOTS} "
                               "(no dotted keys this long)")  # fmt: skip
    try:
        data = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise RequestFileError(f"the file is not valid {fmt.upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise RequestFileError(f"the file must hold one object (a table of fields), not a {type(data).__name__}")
    return data
