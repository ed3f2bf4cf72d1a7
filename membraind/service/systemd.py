"""systemd notification (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

A few lines over an AF_UNIX datagram socket rather than a dependency. Outside systemd
(no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and mine else None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines; returns whether they were sent.

        Never blocks: a service manager that does not read its socket (its queue full)
        must not stall the health loop; the message is dropped with a warning.
        """
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.send("\n".join(lines).encode(), socket.MSG_DONTWAIT)
            return True
        except OSError as exc:  # BlockingIOError included
            log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False

    def ready(self, status: str) -> None:
        """The service is up."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A line shown by ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Proof of health (send only while healthy); only when systemd asked for it (WatchdogSec)."""
        if self.watchdog_seconds:
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """The service is shutting down."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more time to start or stop."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")
