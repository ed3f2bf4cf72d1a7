"""Requests may only read and write under the configured roots (design decision 7)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from membraind.errors import InputError
from membraind.jobs.specs import paths_of

__all__ = ["check_paths"]


def check_paths(spec: BaseModel, roots: list[Path]) -> None:
    """Raise an :class:`InputError` naming the first path of ``spec`` that is relative or outside ``roots``."""
    for field, path in paths_of(spec):
        if not path.is_absolute():
            raise InputError(f"{field}: {str(path)!r} is a relative path; give an absolute path")
        try:
            resolved = path.resolve()  # follows symlinks, so a link cannot lead outside
        except (OSError, RuntimeError) as exc:  # a symlink loop, a NUL byte
            raise InputError(f"{field}: {str(path)!r} cannot be resolved ({exc})") from None
        if not any(resolved == root or root in resolved.parents for root in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise InputError(
                f"{field}: {path} is outside the folders this daemon may use ({allowed}); "
                "move the data there or ask the administrator to add a root ([service] roots)"
            )
