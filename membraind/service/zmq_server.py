"""The ZeroMQ endpoints of ``membraind serve``: requests (ROUTER) and job events (PUB).

One thread owns both sockets (ZeroMQ sockets are not thread-safe). It never blocks on a
client: replies go out with NOBLOCK under ROUTER_MANDATORY, and a reply to a client that
vanished or stopped reading is dropped (the client's Lazy Pirate retry asks again). With
CurveZMQ on, a ZAP authenticator admits only the public keys in ``authorized_keys``
(re-read when that folder changes); others get no answer at all.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

import zmq
from membraind_client.keys import KeyFileError, load_key_pair, load_public_key
from membraind_client.messages import event_topic
from zmq.auth.thread import ThreadAuthenticator

from membraind.errors import ConfigError
from membraind.service.api import ApiHandler
from membraind.service.events import EventFeed
from membraind.service.settings import ApiSettings

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)

POLL_MS = 500
KEY_RELOAD_SECONDS = 5.0
HWM = 1000
SOCKET_SIZE_FACTOR = 16  # beyond this many times the request limit, libzmq drops the connection unanswered


class ApiServer:
    """Serves the API described by ``settings`` until :meth:`stop`."""

    def __init__(self, settings: ApiSettings, handler: ApiHandler, feed: EventFeed) -> None:
        self.settings, self.handler, self.feed = settings, handler, feed
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._key_names: dict[str, str] = {}
        self._keys_stamp: tuple | None = None
        self.context = zmq.Context()
        self.auth: ThreadAuthenticator | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and start serving; raises ConfigError when an endpoint cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="zmq-api", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._close()
            raise self._error

    def healthy(self) -> bool:
        """Whether the socket thread is serving."""
        ok = self._thread is not None and self._thread.is_alive()
        if not ok:
            log.error("the ZeroMQ API thread has stopped")
        return ok

    def stop(self) -> None:
        """Stop serving and close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # a request may wait up to SQLite's 30 s busy timeout
            if self._thread.is_alive():
                log.warning("the ZeroMQ API thread did not stop; leaving its sockets to the process exit")
                return  # terminating the context now would block on its open sockets
        self._close()

    def _close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.context.term()

    # -- sockets -----------------------------------------------------------------------------
    def _curve(self, socket: zmq.Socket) -> None:
        if self.settings.server_key is None:
            return
        public, secret = load_key_pair(self.settings.server_key)
        socket.curve_publickey, socket.curve_secretkey = public, secret
        socket.curve_server = True

    def _bind(self) -> tuple[zmq.Socket, zmq.Socket]:
        if self.settings.server_key is not None:
            try:
                load_key_pair(self.settings.server_key)
            except KeyFileError as exc:
                raise ConfigError(f"[service.api] server_key: {exc}") from None
            if not Path(self.settings.authorized_keys).is_dir():
                raise ConfigError(f"[service.api] authorized_keys: {self.settings.authorized_keys} is not a folder; "
                                  "create it and put the clients' public .key files in it")  # fmt: skip
            self.auth = ThreadAuthenticator(self.context)
            self.auth.start()  # before binding: otherwise the first clients slip through unauthenticated
            self._reload_keys()
        router = self.context.socket(zmq.ROUTER)
        pub = self.context.socket(zmq.PUB)
        for socket in (router, pub):
            socket.linger = 0
            socket.sndhwm = socket.rcvhwm = HWM
            self._curve(socket)
        router.router_mandatory = 1  # unknown peers raise instead of being dropped silently (and we drop them)
        router.maxmsgsize = self.settings.max_message_bytes * SOCKET_SIZE_FACTOR
        router.setsockopt(zmq.HEARTBEAT_IVL, 10_000)  # notice dead TCP peers; their state is freed
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 30_000)
        for socket, endpoint, what in ((router, self.settings.endpoint, "endpoint"), (pub, self.settings.events, "events")):
            if endpoint.startswith("ipc://"):
                Path(endpoint[len("ipc://"):]).parent.mkdir(parents=True, exist_ok=True)
            try:
                socket.bind(endpoint)
            except zmq.ZMQError as exc:
                router.close(), pub.close()
                raise ConfigError(f"[service.api] {what}: cannot listen on {endpoint}: {exc}; another program (or "
                                  "another membraind) uses it: choose another port or path") from None  # fmt: skip
        return router, pub

    def _reload_keys(self) -> None:
        """Tell the authenticator the admitted keys again when the folder changed."""
        folder = Path(self.settings.authorized_keys)
        try:
            files = sorted(folder.glob("*.key"))
            stamp = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        except OSError as exc:
            log.warning("cannot read authorized_keys %s: %s", folder, exc)
            return
        if stamp == self._keys_stamp:
            return
        self._keys_stamp = stamp
        names = {}
        for file in files:
            try:
                names[load_public_key(file).decode()] = file.stem
            except KeyFileError as exc:
                log.warning("authorized_keys: %s", exc)
        self._key_names = names
        self.auth.configure_curve(domain="*", location=str(folder))
        log.info("CurveZMQ: %d client key(s) admitted from %s", len(names), folder)

    def _client_name(self, frame: zmq.Frame) -> str | None:
        if self.settings.server_key is None:
            return None
        key = frame.get("User-Id")
        return f"{self._key_names.get(key, 'unknown')} (key {key})"

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            router, pub = self._bind()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        log.info("ZeroMQ API on %s, events on %s%s", self.settings.endpoint, self.settings.events,
                 " (CurveZMQ)" if self.auth else "")  # fmt: skip
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self.feed.wake_fd, zmq.POLLIN)
        reload_at = 0.0
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if router in ready:
                    self._serve_one(router)
                if self.feed.wake_fd in ready:
                    for event in self.feed.pending():
                        pub.send_multipart([event_topic(event.job_id), event.model_dump_json().encode()], zmq.NOBLOCK)
                if self.auth is not None:
                    now = time.monotonic()
                    if now >= reload_at:
                        self._reload_keys()
                        reload_at = now + KEY_RELOAD_SECONDS
        finally:
            router.close(linger=0)
            pub.close(linger=0)

    def _serve_one(self, router: zmq.Socket) -> None:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        # [identity, (b"" from a REQ peer), body ...]
        split = next((i for i, f in enumerate(frames) if i and not f.bytes), 0)
        envelope, body = frames[: split + 1], frames[split + 1 :]
        reply = self.handler.handle([f.bytes for f in body], self._client_name(frames[-1]))
        try:
            router.send_multipart([f.bytes for f in envelope] + [reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # gone (EHOSTUNREACH) or not reading (EAGAIN): it will ask again
            if exc.errno not in (errno.EHOSTUNREACH, zmq.EAGAIN):
                raise
            log.debug("reply dropped: %s", exc)
