"""The life cycle ``membraind serve`` and ``membraind worker`` share as Unix services: signal
handling, systemd notification, and the health loop that pings the watchdog only while
every part works."""

from __future__ import annotations

import abc
import logging
import signal
import threading

from membraind.errors import Cancelled, ConfigError
from membraind.service.systemd import Notifier

__all__ = ["ServiceProcess", "HEALTH_INTERVAL"]

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0


class ServiceProcess(abc.ABC):
    """A long-running process: :meth:`run` starts it, serves until SIGTERM/SIGINT, stops it."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self._stop = threading.Event()
        self.health_interval = HEALTH_INTERVAL

    @abc.abstractmethod
    def start(self) -> None:
        """Bring everything up; send READY at the end."""

    @abc.abstractmethod
    def healthy(self) -> bool:
        """Whether every part works (dead parts are restarted)."""

    def wait_for_journal(self, journal, what: str) -> None:
        """Start-up: wait until ``journal`` answers (a Redis server may come up after us),
        saying so in the log and systemd's status; raises Cancelled if asked to stop,
        and the journal's ConfigError when waiting would not help (a refused password)."""
        said = False
        while True:
            try:
                journal.check()
                if said:
                    log.info("%s answers now", what)
                return
            except ConfigError:
                raise
            except Exception as exc:
                if not said:
                    message = f"waiting for {what} ({type(exc).__name__}: {exc}); check that it runs and is reachable"
                    log.warning(message)
                    self.notifier.status(message)
                    said = True
            self.notifier.extend_timeout(30)  # systemd's start timeout must not end a wait for another service
            if self._stop.wait(2.0):
                raise Cancelled(f"stopped while waiting for {what}")

    @staticmethod
    def journal_readable(journal) -> bool:
        """Whether the journal answers (its backend's error is logged when not)."""
        try:
            journal.counts()
        except Exception as exc:
            log.error("the journal cannot be read: %s", exc)
            return False
        return True

    def periodically(self) -> None:
        """Work done at every turn of the health loop."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Graceful stop: running jobs reach a safe point and are re-queued."""

    def request_stop(self, *_: object) -> None:
        """Ask the process to stop (signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop. Must be called from the main thread."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no reload; a stray HUP must not kill the service
        try:
            self.start()
            interval = self.health_interval
            if self.notifier.watchdog_seconds:
                interval = min(interval, self.notifier.watchdog_seconds / 2)
            while not self._stop.wait(interval):
                if self.healthy():
                    self.notifier.watchdog()
                else:
                    log.warning("a part of the service is unhealthy; not pinging the systemd watchdog")
                self.periodically()
        except Cancelled:  # SIGTERM while the engine was still starting: a normal stop
            log.info("stop requested during start-up")
        finally:
            self.stop()
