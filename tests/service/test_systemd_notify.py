"""sd_notify over a real AF_UNIX datagram socket: WATCHDOG only when systemd asked for it,
and a manager that does not read never blocks the service."""

from __future__ import annotations

import os
import socket

from membraind.service.systemd import Notifier


def listening(tmp_path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_watchdog_pings_only_when_systemd_asked_for_them(tmp_path, monkeypatch):
    sock = listening(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    Notifier().watchdog()
    assert received(sock) == []
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    notifier.watchdog()
    notifier.ready("ready: test")
    assert received(sock) == ["WATCHDOG=1", "READY=1\nSTATUS=ready: test"]
    assert notifier.watchdog_seconds == 60.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert Notifier().watchdog_seconds is None


def test_a_manager_that_does_not_read_never_blocks(tmp_path, monkeypatch, caplog):
    sock = listening(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    notifier = Notifier()
    sent = [notifier.notify(f"STATUS=status {i}") for i in range(5000)]  # far beyond the socket's queue
    assert sent[0] and not sent[-1], "the first ones are sent, the rest dropped instead of waiting"
    assert "Resource temporarily unavailable" in caplog.text or "No buffer space" in caplog.text
    assert received(sock)[0] == "STATUS=status 0"
