"""Running ``membraind serve`` as a child process, the way systemd does: it is started
with a ``$NOTIFY_SOCKET`` and counted as up only when it sends READY=1.

Used by the tests, the service benchmark and scripts that need a daemon for a while.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SupervisedDaemon", "wait_until"]


def wait_until(predicate, timeout: float = 120.0, interval: float = 0.05, what: str = "the daemon"):
    """Poll ``predicate`` until it returns something truthy and return that, or raise
    TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class SupervisedDaemon:
    """``membraind --config CONFIG serve`` in a subprocess, with its notifications collected."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log_path = Path(config), Path(log)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")} | (env or {})
        self.process: subprocess.Popen | None = None
        self.notifications: list[str] = []
        self._socket_dir = tempfile.mkdtemp(prefix="membraind-notify-")
        self._socket_path = os.path.join(self._socket_dir, "notify")
        self._socket: socket.socket | None = None

    def start(self, ready_timeout: float = 180.0, until: str = "READY=1") -> "SupervisedDaemon":
        """Start the daemon and wait for READY=1, or another notification holding ``until``
        (raises with the log's tail if it never comes)."""
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self._socket_path)
        self.notifications = []
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "membraind", "--config", str(self.config), "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env | {"NOTIFY_SOCKET": self._socket_path},
        )  # fmt: skip
        log.close()
        if not self.wait_for(until, ready_timeout):
            self.kill()
            raise RuntimeError(f"the daemon did not become ready; its log ends:\n{self.log_tail()}")
        return self

    def wait_for(self, line: str, timeout: float) -> bool:
        """Wait until the daemon sent a notification containing ``line``; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while not any(line in n for n in self.notifications):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                return False
            self._socket.settimeout(min(remaining, 0.5))
            try:
                self.notifications.append(self._socket.recv(4096).decode())
            except TimeoutError:
                pass
        return True

    def log_tail(self, lines: int = 40) -> str:
        """The end of the daemon's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (its engines)."""
        pids = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):  # each thread lists the children it started
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def engines(self) -> list[int]:
        """Pids of the daemon's engine processes (spawned children, not multiprocessing's helpers)."""
        pids = []
        for pid in self.children():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(pid)
        return pids

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon's main process."""
        self.process.send_signal(signum)

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the daemon to exit; returns its exit status."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the daemon (pid {self.process.pid}) did not exit within {timeout:.0f} s; its log "
                               f"ends:\n{self.log_tail()}") from None  # fmt: skip
        finally:
            self._close_socket()

    def kill(self) -> None:
        """SIGKILL the daemon (its engines exit by themselves when it is gone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._close_socket()

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait, as ``systemctl stop`` does."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.setblocking(False)
            while True:  # keep what arrived since the last wait_for
                try:
                    self.notifications.append(self._socket.recv(4096).decode())
                except OSError:
                    break
            self._socket.close()
            self._socket = None
            os.unlink(self._socket_path)

    def __enter__(self) -> "SupervisedDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
