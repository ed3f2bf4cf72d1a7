"""The console's web server: uvicorn in a thread of ``membraind serve``, started and stopped
with the daemon like the ZeroMQ API."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

from membraind.console import access
from membraind.console.app import Console, build_app
from membraind.console.live import LiveEvents
from membraind.console.pages import Sources
from membraind.errors import ConfigError

__all__ = ["ConsoleServer", "console_server"]

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0


class ConsoleServer:
    """Serves ``console`` on ``console.web.listen`` until :meth:`stop`."""

    def __init__(self, console: Console) -> None:
        import uvicorn

        self.console = console
        web = console.web
        config = uvicorn.Config(
            build_app(console), host=web.host, port=web.port, log_level="warning", access_log=False,
            ssl_certfile=str(web.tls_certificate) if web.tls_certificate else None,
            ssl_keyfile=str(web.tls_key) if web.tls_key else None, timeout_graceful_shutdown=1,
            lifespan="off", proxy_headers=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.url = access.console_url(console.sources.service.home, web)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Bind and start serving; a ConfigError says why when the address cannot be used."""
        web = self.console.web
        try:  # bound here, so that a port in use stops the daemon's start with the reason
            family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((web.host, web.port))
        except OSError as exc:
            raise ConfigError(f"[service.web] listen: cannot listen on {web.listen}: {exc}; another program (or "
                              "another membraind) uses it: choose another port") from None  # fmt: skip
        if web.tls_certificate:
            for path in (web.tls_certificate, web.tls_key):
                if not path.is_file():
                    sock.close()
                    raise ConfigError(f"[service.web] {path} does not exist; give the PEM certificate and key files")
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.console.live.bind(loop)
            started.set()
            try:
                loop.run_until_complete(self.server.serve(sockets=[sock]))
            except BaseException as exc:  # e.g. a certificate that cannot be read
                self._error = exc
                log.error("the lab console stopped: %s", exc)
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="console", daemon=True)
        self._thread.start()
        started.wait()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if self._error is not None:
            raise ConfigError(f"[service.web]: the console cannot start: {self._error}")

    def healthy(self) -> bool:
        """Whether the server thread is serving."""
        ok = self._thread is not None and self._thread.is_alive()
        if not ok:
            log.error("the lab console's thread has stopped")
        return ok

    def stop(self) -> None:
        """Close the open pages' event streams and stop serving."""
        self.console.live.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS + 2)


def console_server(settings, journal, submit, cancel, feed, device) -> ConsoleServer:
    """The console of a daemon: its ``settings``, ``journal``, submit and cancel functions,
    its :class:`~membraind.service.events.EventFeed` and ``device()`` (where models run)."""
    service = settings.service
    token = access.read_or_create_token(access.token_path(service.home, service.web))
    live = LiveEvents(feed.epoch)
    feed.subscribe(live.publish)
    sources = Sources(journal=journal, service=service, device=device)
    return ConsoleServer(Console(sources=sources, submit=submit, cancel=cancel, live=live, web=service.web,
                                 token=token, settings=settings))  # fmt: skip
