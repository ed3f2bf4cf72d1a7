"""Where VAST sees the daemon's files: a path mapping from daemon prefixes to VAST's.

VAST runs on Windows; membraind on a Linux server or in WSL2. A file the daemon writes at
``/data/lab/predictions/x.vsvi`` is ``Z:\\lab\\predictions\\x.vsvi`` (a mapped drive),
``\\\\fileserver\\lab\\predictions\\x.vsvi`` (a share) or ``D:\\...`` (WSL2's ``/mnt/d``)
on the VAST machine. Every path handed to VAST goes through :func:`vast_path`; a path no
mapping covers is an :class:`~membraind.errors.InputError` naming the path and the
mappings, raised when a job is submitted rather than by VAST later. With no mapping at
all VAST shares the daemon's file system (the same machine) and paths go as they are.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from pydantic import field_validator

from membraind.errors import InputError
from membraind.strict import StrictModel

__all__ = ["PathMap", "vast_path", "local_path", "parse_path_map", "is_windows_path", "describe_path_maps"]

_WINDOWS = re.compile(r"^([A-Za-z]:[\\/]|\\\\[^\\/]+[\\/][^\\/]+)")  # D:\ or \\server\share


def is_windows_path(text: str) -> bool:
    """Whether ``text`` is an absolute Windows path (drive letter or UNC share)."""
    return bool(_WINDOWS.match(text))


class PathMap(StrictModel):
    """One prefix of the daemon's file system and where VAST sees it."""

    daemon: Path
    vast: str

    @field_validator("daemon")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} is relative; give the daemon's absolute folder, e.g. /data/lab")
        return value

    @field_validator("vast")
    @classmethod
    def _vast_absolute(cls, value: str) -> str:
        if not (is_windows_path(value) or value.startswith("/")):
            raise ValueError(f"{value!r} is not an absolute path on the VAST machine: give e.g. Z:\\lab, "
                             "\\\\fileserver\\lab or /data/lab")  # fmt: skip
        return value

    @property
    def windows(self) -> bool:
        """Whether VAST sees this folder through a Windows path."""
        return is_windows_path(self.vast)

    def text(self) -> str:
        """The mapping as typed on the command line: ``DAEMON=VAST``."""
        return f"{self.daemon}={self.vast}"


def parse_path_map(text: str) -> PathMap:
    """``/data/lab=Z:\\lab`` (the command line's ``--vast-path``) as a :class:`PathMap`."""
    daemon, sep, vast = text.partition("=")
    if not sep or not daemon.strip() or not vast.strip():
        raise InputError(f"path mapping {text!r}: write DAEMON_FOLDER=VAST_FOLDER, e.g. /data/lab=Z:\\lab")
    try:
        return PathMap(daemon=Path(daemon.strip()), vast=vast.strip())
    except ValueError as exc:
        raise InputError(f"path mapping {text!r}: {exc}") from None


def vast_path(path: Path | str, maps: list[PathMap]) -> str:
    """``path`` (absolute, on the daemon's machine) as VAST must be given it.

    The longest daemon prefix that holds ``path`` wins; Windows targets get back-slashes.
    With no mappings the path goes as it is (VAST on the same machine).
    """
    path = PurePosixPath(Path(path).absolute().as_posix())
    if not maps:
        return str(path)
    holding = [m for m in maps if path == PurePosixPath(m.daemon) or PurePosixPath(m.daemon) in path.parents]
    if not holding:
        raise InputError(
            f"{path} lies outside the folders VAST can see ({describe_path_maps(maps)}): write it below one of "
            "them, or add a mapping for its folder ([[service.vast]] paths, or --vast-path DAEMON=VAST)"
        )
    best = max(holding, key=lambda m: len(PurePosixPath(m.daemon).parts))
    rest = path.relative_to(PurePosixPath(best.daemon)).parts
    if best.windows:
        return str(PureWindowsPath(best.vast, *rest))
    return str(PurePosixPath(best.vast, *rest))


def local_path(text: str, maps: list[PathMap]) -> Path:
    """The inverse of :func:`vast_path`: a path as VAST names it, on this machine (the
    emulator standing in for VAST on Windows opens files through it). Windows paths are
    matched without regard to case or separator, as Windows matches them."""
    for m in sorted(maps, key=lambda m: len(m.vast), reverse=True):
        if m.windows and is_windows_path(text):
            prefix, path = PureWindowsPath(m.vast), PureWindowsPath(text)
            if path == prefix or prefix in path.parents:  # PureWindowsPath compares case-insensitively
                return Path(m.daemon, *path.relative_to(prefix).parts)
        elif not m.windows and (text == m.vast or text.startswith(m.vast.rstrip("/") + "/")):
            return Path(m.daemon, *PurePosixPath(text).relative_to(PurePosixPath(m.vast)).parts)
    raise InputError(f"{text} lies in none of the mapped folders ({describe_path_maps(maps)})")


def describe_path_maps(maps: list[PathMap]) -> str:
    """The mappings as a person reads them: ``/data/lab -> Z:\\lab, ...``."""
    return ", ".join(f"{m.daemon} -> {m.vast}" for m in maps) or "no mappings"
