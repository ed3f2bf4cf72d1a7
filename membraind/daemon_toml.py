"""Daemon configuration files (``membraind.toml``) written from a dict, for the demo, tests and benchmarks.

The dict has the file's shape (docs/configuration.md): sections are dicts, ``[[service.scope]]``
is a list of dicts. No TOML writer is among membraind's dependencies and the files need only
strings, paths, numbers, booleans, lists and tables, so this module writes those itself;
``tomllib`` reads back exactly the dict that was written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["daemon_toml", "ipc_api", "merged", "write_daemon_toml"]


def ipc_api(folder: Path | str, prefix: str = "") -> dict[str, str]:
    """A ``[service.api]`` table serving on ipc sockets in ``folder`` (``{prefix}api.sock``, ``{prefix}events.sock``)."""
    return {"endpoint": f"ipc://{folder}/{prefix}api.sock", "events": f"ipc://{folder}/{prefix}events.sock"}


def merged(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each of ``overrides`` laid over it: tables merge key by key, other values are replaced."""
    out = dict(base)
    for override in overrides:
        for key, value in override.items():
            old = out.get(key)
            out[key] = merged(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def daemon_toml(config: Mapping[str, Any], comment: str = "") -> str:
    """``config`` as a TOML document, after ``comment`` (one ``#`` line per line of it)."""
    head = [f"# {line}".rstrip() for line in comment.splitlines()]
    return "\n".join([*head, *_table(config, "")]).lstrip("\n") + "\n"


def write_daemon_toml(path: Path, config: Mapping[str, Any], *overrides: Mapping[str, Any], comment: str = "") -> Path:
    """Write ``config`` with ``overrides`` laid over it (see :func:`merged`) to ``path``; returns ``path``."""
    path.write_text(daemon_toml(merged(config, *overrides), comment), encoding="utf-8")
    return path


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _table(table: Mapping[str, Any], name: str) -> list[str]:
    """The lines of ``table``: its plain keys first (TOML puts them before any sub-table), then its sub-tables."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
    for key, value in table.items():
        full = f"{name}.{_key(key)}" if name else _key(key)
        if isinstance(value, Mapping):
            lines += ["", f"[{full}]", *_table(value, full)]
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{full}]]", *_table(item, full)]
    return lines


def _key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML basic-string escapes; TOML also wants DEL escaped.
    return json.dumps(text).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python's repr of a number, inf and nan included, is TOML
    if isinstance(value, (str, Path)):
        return _string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{value!r} ({type(value).__name__}) has no TOML form here")
