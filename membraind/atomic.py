"""Atomic file writes: write beside the target, then rename into place.

docs/design-notes.md, "Idempotent outputs".

A reader (VAST, a watcher, another worker, a resumed run) therefore sees either the old
file or the whole new one, never half of one.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sibling(path: Path, tag: str = "tmp") -> Path:
    """An unused hidden name next to ``path`` (same file system, so renames are atomic)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only when writing failed


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8", errors: str = "strict") -> Path:
    """Write ``text`` (UTF-8 unless told) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding, errors=errors)
    return Path(path)
