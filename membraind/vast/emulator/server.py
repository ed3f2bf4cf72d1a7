"""The emulated VAST's TCP server: framing, one thread per connection, and injected faults.

:class:`VastEmulator` listens on TCP, reads request frames and answers each with what
:class:`~membraind.vast.emulator.commands.EmulatedVast` replies (or with its error code).

Faults for client tests: set :attr:`VastEmulator.fault` to one of :data:`FAULTS`; it
applies to the next reply (of any connection) only:

- ``close_mid_reply``: send half of the reply, then close the connection;
- ``wrong_magic``: send the reply with ``VASX`` instead of ``VAST``, then close;
- ``length_too_large``: announce 1024 more bytes than sent, send the reply, then stall;
- ``stall``: send nothing; stalling ends when the client closes, the emulator stops or
  ``idle_timeout`` passes, and then the connection is closed.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from pathlib import Path

from membraind.vast.emulator.commands import API_VERSION, EM_NAME, SEGMENTATION_NAME, EmulatedVast, Refused
from membraind.vast.emulator.sparse_labels import SparseLabels
from membraind.vast.paths import PathMap
from membraind.vast.protocol import (
    HEADER,
    MAGIC,
    VastProtocolError,
    encode_frame,
    encode_values,
    read_frame,
)
from membraind.vast.skeletons import AnnotationLayerData
from membraind.volumes.volume import Volume

__all__ = ["VastEmulator", "FAULTS", "REQUEST_LIMIT"]

log = logging.getLogger(__name__)

FAULTS = ("close_mid_reply", "wrong_magic", "length_too_large", "stall")
REQUEST_LIMIT = 512 << 20  # a request announcing more is not the protocol: the connection is closed


class VastEmulator:
    """An emulated VAST remote-API server (see :mod:`membraind.vast.emulator` for what it serves).

    ``volume``, ``skeletons``, ``voxel_size``, ``cube_size``, ``em_name``,
    ``segmentation_name`` and ``api_version`` make the :class:`EmulatedVast` it serves (``vast``).
    ``port=0`` picks a free port; :meth:`start` returns the bound one.
    ``idle_timeout`` (s) closes connections that send nothing for that long.

    Attributes for tests: ``calls`` (LOADLAYER, REFRESHLAYERREGION and REMOVELAYER requests,
    as ``("LOADLAYER", filename)``, ``("REFRESHLAYERREGION", layer, minx, maxx, miny, maxy,
    minz, maxz)`` and ``("REMOVELAYER", layer)``), ``fault`` (see :data:`FAULTS`), ``segmentation`` (:class:`SparseLabels`),
    ``connections`` (open connection count) and :meth:`wait_idle`.
    """

    def __init__(
        self,
        volume: Volume | Path | str,
        *,
        skeletons: Path | str | list[AnnotationLayerData] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        voxel_size: tuple[float, float, float] | None = None,
        cube_size: tuple[int, int, int] = (16, 16, 16),
        idle_timeout: float = 600.0,
        max_connections: int = 64,
        em_name: str = EM_NAME,
        segmentation_name: str = SEGMENTATION_NAME,
        windows_paths: list[PathMap] | None = None,
        api_version: int = API_VERSION,
    ) -> None:
        self.vast = EmulatedVast(
            volume, skeletons=skeletons, voxel_size=voxel_size, cube_size=cube_size, em_name=em_name,
            segmentation_name=segmentation_name, windows_paths=windows_paths, api_version=api_version,
        )  # fmt: skip
        self.host, self.port = host, port
        self.idle_timeout, self.max_connections = idle_timeout, max_connections
        self._io = threading.Condition()  # guards fault and connections
        self._fault: str | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    @property
    def volume(self) -> Volume:
        """The EM layer."""
        return self.vast.volume

    @property
    def segmentation(self) -> SparseLabels:
        """The segmentation layer's ids at mip 0."""
        return self.vast.segmentation

    @property
    def calls(self) -> list[tuple[str | int, ...]]:
        """LOADLAYER, REFRESHLAYERREGION and REMOVELAYER requests received, oldest first."""
        return self.vast.calls

    def layer_names(self) -> list[str]:
        """Every layer as ``"N kind 'name'"``, in VAST order."""
        return self.vast.layer_names()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def fault(self) -> str | None:
        """The fault applied to the next reply (None: none); cleared once applied."""
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value is not None and value not in FAULTS:
            raise ValueError(f"unknown fault {value!r}; choose one of {', '.join(FAULTS)} or None")
        with self._io:
            self._fault = value

    @property
    def connections(self) -> int:
        """Connections being served now."""
        with self._io:
            return len(self._conns)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no connection is being served; False if some still are after ``timeout`` s."""
        with self._io:
            return self._io.wait_for(lambda: not self._conns, timeout)

    def start(self) -> int:
        """Listen and serve in background threads; returns the port."""
        if self._listener is not None:
            return self.port
        self._stopping.clear()
        self._listener = socket.create_server((self.host, self.port))
        self._listener.settimeout(0.5)  # the accept loop notices stop() even where shutdown does not wake it
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"vast-emulator:{self.port}", daemon=True)
        self._acceptor.start()
        log.info("VAST emulator listening on %s", self.address)
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection and wait for the threads serving them."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            _shutdown(listener)
            listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
            self._acceptor = None
        with self._io:
            conns = dict(self._conns)
        for conn in conns:
            _shutdown(conn)  # wakes the thread blocked in recv
        for thread in conns.values():
            thread.join(timeout)

    def __enter__(self) -> "VastEmulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break  # listener closed by stop()
            with self._io:
                if len(self._conns) >= self.max_connections or self._stopping.is_set():
                    log.warning("VAST emulator: refusing a connection, %d already open", len(self._conns))
                    conn.close()
                    continue
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True, name="vast-emulator-conn")
                self._conns[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.idle_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stopping.is_set():
                try:
                    command, params = read_frame(conn, limit=REQUEST_LIMIT)
                except (VastProtocolError, OSError) as exc:  # includes timeouts and resets
                    log.debug("VAST emulator: closing a connection (%s)", exc)
                    return
                reply = self._answer(command, params)
                if not self._send(conn, reply):
                    return
        finally:
            conn.close()
            with self._io:
                self._conns.pop(conn, None)
                self._io.notify_all()

    def _send(self, conn: socket.socket, reply: bytes) -> bool:
        """Send ``reply``, applying a pending fault; False when the connection must close."""
        with self._io:
            fault, self._fault = self._fault, None
        try:
            if fault is None:
                conn.sendall(reply)
                return True
            log.info("VAST emulator: injecting fault %s", fault)
            if fault == "close_mid_reply":
                conn.sendall(reply[: len(reply) // 2])
            elif fault == "wrong_magic":
                conn.sendall(b"VASX" + reply[len(MAGIC) :])
            elif fault == "length_too_large":
                length = HEADER.unpack_from(reply)[1]
                conn.sendall(HEADER.pack(MAGIC, length + 1024) + reply[HEADER.size :])
                self._stall(conn)
            else:
                self._stall(conn)
        except OSError as exc:
            log.debug("VAST emulator: reply not sent (%s)", exc)
        return False

    def _stall(self, conn: socket.socket) -> None:
        """Say nothing until the peer closes, the emulator stops, or ``idle_timeout`` passes."""
        waited = 0.0
        while not self._stopping.is_set() and waited < self.idle_timeout:
            ready, _, _ = select.select([conn], [], [], 0.2)
            waited += 0.2
            if ready and not conn.recv(1 << 16):
                return  # the client gave up and closed

    def _answer(self, command: int, params: bytes) -> bytes:
        """The reply frame to one request; never raises."""
        try:
            return encode_frame(1, self.vast.answer(command, params), signed=True)
        except Refused as exc:
            log.debug("VAST emulator: command %d refused with %d: %s", command, exc.code, exc)
            return encode_frame(0, encode_values(exc.code), signed=True)
        except VastProtocolError as exc:
            log.debug("VAST emulator: command %d carries invalid values: %s", command, exc)
            return encode_frame(0, encode_values(3), signed=True)
        except Exception:  # a bug here must not take the server down
            log.exception("VAST emulator: internal error answering command %d", command)
            return encode_frame(0, encode_values(5), signed=True)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
