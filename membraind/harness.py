"""Running ``membraind serve`` or ``membraind worker`` as a child process, the way
systemd does: it is started with a ``$NOTIFY_SOCKET`` and counted as up only when it
sends READY=1; and a throw-away ``redis-server`` for a cluster on one machine.

A test and demo harness, not part of the service (no service module imports it): used by
``membraind demo``, the tests, the benchmarks and scripts that need a daemon for a while.
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

__all__ = ["SupervisedDaemon", "RedisServer", "wait_until", "free_port"]


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
    """``membraind --config CONFIG serve`` (or another ``command``, e.g. ``["worker", "--cpu"]``)
    in a subprocess, with its notifications collected."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self.config, self.log_path = Path(config), Path(log)
        self.command = command or ["serve"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")} | (env or {})
        if self.command == ["serve"] and WEB_LISTEN not in self.env and not _configures_web_listen(self.config):
            # Each daemon's console on its own free port: daemons started one after another (or
            # side by side, or beside a lab's own on 5580) must not meet on the default port.
            self.env[WEB_LISTEN] = f"127.0.0.1:{free_port()}"
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
            [sys.executable, "-m", "membraind", "--config", str(self.config), *self.command],
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


WEB_LISTEN = "MEMBRAIND_SERVICE__WEB__LISTEN"


def _configures_web_listen(config: Path) -> bool:
    """Whether the configuration file sets ``[service.web] listen``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(config).read_text())
    except (OSError, ValueError):
        return False
    return "listen" in data.get("service", {}).get("web", {})


def free_port() -> int:
    """A TCP port free on loopback now (the moment between closing and binding is harmless here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A ``redis-server`` of its own on a free loopback port, with its data in ``folder``
    (append-only file on, as in production); stopped on exit."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        """``port`` 0: a free one."""
        self.folder = Path(folder)
        self.process: subprocess.Popen | None = None
        self.port = port

    @property
    def url(self) -> str:
        """Its address, for ``[service.queue] redis_url``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> "RedisServer":
        """Start it and wait until it answers PING (raises RuntimeError saying why not)."""
        import shutil

        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server); "
                               "the Redis backend's tests and benchmarks need it")  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        log = open(self.folder / "redis.log", "ab")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_until(lambda: self._answers(client), timeout, what=f"redis-server on port {self.port}")
        except TimeoutError:
            self.stop()
            tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server did not start; its log ends:\n{tail}") from None
        finally:
            client.close()
        return self

    def _answers(self, client) -> bool:
        if self.process.poll() is not None:
            raise TimeoutError("redis-server exited")
        try:
            return bool(client.ping())
        except Exception:
            return False

    def flush(self) -> None:
        """Empty every database (between tests)."""
        import redis

        with redis.Redis(port=self.port) as client:
            client.flushall()

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
