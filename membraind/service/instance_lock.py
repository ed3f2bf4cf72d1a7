"""One daemon per state folder: an exclusive ``flock`` held for the daemon's lifetime.

The kernel releases the lock when the process dies however it dies, so a crash never
leaves a stale lock behind, and a second daemon is refused instead of silently sharing
(or stealing) the journal, the queue and later the ZeroMQ endpoint.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from membraind.errors import ConfigError

__all__ = ["InstanceLock"]


class InstanceLock:
    """The lock file ``<state>/<name>.lock`` (it records the holder's pid); ``what`` names
    the holder in the error (``daemon``, ``worker gpu0``)."""

    def __init__(self, state_dir: Path, name: str = "membraind", what: str = "daemon",
                 hint: str = "give this one its own [service] state_dir") -> None:  # fmt: skip
        self.path = Path(state_dir) / f"{name}.lock"
        self.what, self.hint = what, hint
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise a ConfigError naming the daemon that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"another membraind {self.what} (pid {holder}) already runs on the state folder {self.path.parent}; "
                f"stop it first, or {self.hint}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
