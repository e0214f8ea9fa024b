"""Servers that never finish answering, for deadline tests and the deadline benchmark.

A :class:`Tarpit` listens on 127.0.0.1:0 in daemon threads, for at most ``lifetime`` seconds
(then it closes everything by itself). Three kinds, for Redis, MariaDB and PostgreSQL:

- ``silent``: accepts and never sends a byte;
- ``half``: sends half a reply and stalls (Redis: ``$10\\r\\nabc`` to the first command; MariaDB:
  the first bytes of a handshake packet; PostgreSQL: ``N`` to an SSL/GSS request, then the first
  bytes of an authentication request in answer to the startup message);
- ``trickle``: a real server's reply proxied byte by byte, one byte per ``interval`` seconds.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from contextlib import suppress

KINDS = ("silent", "half", "trickle")
SERVICES = ("redis", "mariadb", "postgres")
DEFAULT_UPSTREAMS = {"mariadb": ("127.0.0.1", 3306), "postgres": ("127.0.0.1", 5432)}
_PG_NEGOTIATION = {80877103, 80877104}
"""SSLRequest and GSSENCRequest codes."""
HALF_REPLIES = {
    "redis": b"$10\r\nabc",
    "mariadb": b"\x4a\x00\x00\x00\x0a10.11.6-Maria",  # a 74-byte handshake packet, cut after 17 bytes
    "postgres": b"R\x00\x00\x00\x0c\x00\x00",  # an authentication request, cut inside its code
}


class Tarpit:
    """A listener for ``service`` that stalls its clients the way ``kind`` says (see the module docstring)."""

    def __init__(self, service: str, kind: str, upstream: tuple[str, int] | None = None, interval: float = 1.0,
                 lifetime: float = 120.0) -> None:
        assert service in SERVICES and kind in KINDS, (service, kind)
        self.service, self.kind, self.interval = service, kind, interval
        self.upstream = upstream or DEFAULT_UPSTREAMS.get(service)
        assert kind != "trickle" or self.upstream, "a trickle proxies a real server: give its upstream"
        self.until = time.monotonic() + lifetime
        self.connections = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name=f"tarpit-{service}-{kind}", daemon=True).start()

    def url(self, db: str = "") -> str:
        """A URL of this service's scheme pointing at the tarpit."""
        scheme = {"redis": "redis", "mariadb": "mysql", "postgres": "postgresql"}[self.service]
        user = {"redis": "", "mariadb": "root@", "postgres": "postgres@"}[self.service]
        return f"{scheme}://{user}127.0.0.1:{self.port}/{db}"

    def stopped(self) -> bool:
        return self._stop.is_set() or time.monotonic() >= self.until

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while not self.stopped():
            try:
                conn, _ = self._server.accept()
            except OSError:  # includes the 0.1 s accept timeout
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(self._keep(conn),), daemon=True).start()
        self.close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with suppress(OSError):
            if self.kind == "half":
                self._half(conn)
            elif self.kind == "trickle":
                self._trickle(conn)
            self._hold(conn)

    def _recv(self, conn: socket.socket) -> bytes:
        """Some bytes from ``conn`` ('' once it closed or the tarpit stops)."""
        while not self.stopped():
            try:
                return conn.recv(65536)
            except TimeoutError:
                continue
        return b""

    def _hold(self, conn: socket.socket) -> None:
        """Read and ignore whatever the client sends, until it leaves or the tarpit stops."""
        while not self.stopped():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue

    def _half(self, conn: socket.socket) -> None:
        if self.service == "mariadb":  # the server speaks first
            conn.sendall(HALF_REPLIES["mariadb"])
            return
        while True:
            data = self._recv(conn)
            if not data:
                return
            if self.service == "postgres" and len(data) >= 8 and struct.unpack("!I", data[4:8])[0] in _PG_NEGOTIATION:
                conn.sendall(b"N")
                continue
            conn.sendall(HALF_REPLIES[self.service])
            return

    def _trickle(self, conn: socket.socket) -> None:
        assert self.upstream is not None
        upstream = self._keep(socket.create_connection(self.upstream, timeout=5))
        upstream.settimeout(0.1)

        def forward() -> None:  # client -> server at full speed
            with suppress(OSError):
                while data := self._recv(conn):
                    upstream.sendall(data)

        threading.Thread(target=forward, daemon=True).start()
        pending = b""
        while not self.stopped():  # server -> client, one byte per interval
            if not pending:
                pending = self._recv(upstream)
                if not pending:
                    return
            conn.sendall(pending[:1])
            pending = pending[1:]
            self._stop.wait(self.interval)

    def close(self) -> None:
        """Stop accepting and close every connection (also done by itself after ``lifetime``)."""
        self._stop.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [*sockets, self._server]:
            with suppress(OSError):
                sock.close()

    def __enter__(self) -> Tarpit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
