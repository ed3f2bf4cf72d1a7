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
    """The lock file ``<state>/membraind.lock`` (it records the holder's pid)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "membraind.lock"
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
                f"another membraind daemon (pid {holder}) already runs on the state folder {self.path.parent}; "
                "stop it first, or give this one its own [service] state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
