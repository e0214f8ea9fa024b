"""Job functions that hang in recognisable ways, for tests and ``rqdoctor demo``.

Stdlib only and free of import-time side effects: rq workers import this module by its
dotted path (``rqdoctor.scenarios.sleep_for``) inside their own virtualenv. Every job takes
plain keyword arguments. Database drivers (PyMySQL, psycopg2) are imported lazily.
"""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- plain Python hangs ------------------------------------------------------------------


def quick() -> str:
    """Return at once (a healthy job)."""
    return "ok"


def boom(message: str = "rqdoctor scenario failure") -> None:
    """Raise at once (a failed job)."""
    raise RuntimeError(message)


def sleep_for(seconds: float) -> float:
    """Sleep in ``time.sleep`` for ``seconds``."""
    time.sleep(float(seconds))
    return float(seconds)


def ignore_term(seconds: float) -> float:
    """Ignore SIGTERM, then sleep for ``seconds``: only SIGKILL ends it early."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(float(seconds))
    return float(seconds)


def http_no_timeout(url: str) -> int:
    """GET ``url`` with no socket timeout; against a tarpit this blocks in ``recv`` forever."""
    with urllib.request.urlopen(url) as response:  # no timeout, on purpose
        return response.status


def wait_child(seconds: float) -> int:
    """Wait on a ``sleep`` child process (the job's stack sits in ``subprocess.run``)."""
    return subprocess.run(["sleep", str(seconds)], check=False).returncode


def cpu_loop(seconds: float) -> int:
    """Spin the CPU in pure Python for ``seconds``; returns the iteration count."""
    deadline = time.monotonic() + float(seconds)
    x = n = 0
    while time.monotonic() < deadline:
        for _ in range(1000):
            x = (x * 31 + 7) % 1_000_003
        n += 1
    return n


def thread_deadlock() -> None:
    """Two threads take two locks in opposite order; the main thread joins them forever."""
    lock_a, lock_b = threading.Lock(), threading.Lock()
    barrier = threading.Barrier(2)

    def grab(first: threading.Lock, second: threading.Lock) -> None:
        with first:
            barrier.wait()
            with second:
                pass

    threads = [
        threading.Thread(target=grab, args=(lock_a, lock_b), name="deadlock-a", daemon=True),
        threading.Thread(target=grab, args=(lock_b, lock_a), name="deadlock-b", daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _progress_hash() -> None:
    data = b"rqdoctor"
    for _ in range(100_000):
        data = hashlib.sha256(data).digest()


def _progress_sort() -> None:
    sorted(((i * 7919) % 10007 for i in range(150_000)), reverse=True)


def _progress_text() -> None:
    " ".join(str(i) for i in range(200_000)).split()


def _progress_math() -> None:
    sum(i * i % 7 for i in range(300_000))


def _progress_nap() -> None:
    time.sleep(0.005)


def progress(seconds: float) -> int:
    """Busy work whose stack keeps changing (a slow job that is making progress)."""
    steps = (_progress_hash, _progress_nap, _progress_sort, _progress_text, _progress_nap, _progress_math)
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        steps[n % len(steps)]()
        n += 1
    return n


# --- healthy loops: they sleep, but between the sleeps they work ---------------------------


def work_between_naps(seconds: float, nap: float = 0.02) -> int:
    """Real work (hashing, sorting) between short sleeps, for ``seconds``; returns the step count."""
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        digest = hashlib.sha256(str(n).encode()).digest()
        for _ in range(2000):
            digest = hashlib.sha256(digest).digest()
        sorted(((i * 7919 + n) % 10007 for i in range(20_000)), reverse=True)
        n += 1
        time.sleep(float(nap))
    return n


def save_every(host: str, port: int, user: str, password: str, db: str, table: str, seconds: float,
               every: float = 0.2) -> int:
    """INSERT and COMMIT one row into ``table`` (created if missing) every ``every`` s (a document save loop)."""
    table = _ident(table)
    conn = _mysql_connect(host, port, user, password, db)
    deadline = time.monotonic() + float(seconds)
    n = 0
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS `{table}` "
                        "(id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
            conn.autocommit(False)
            while time.monotonic() < deadline:
                cur.execute(f"INSERT INTO `{table}` (note) VALUES (%s)", (f"saved {n}",))
                conn.commit()
                n += 1
                time.sleep(float(every))
    finally:
        conn.close()
    return n


def send_every(host: str, port: int, seconds: float, every: float = 0.2) -> int:
    """A rate-limited sender: a small message over TCP to ``host:port``, then a sleep, for ``seconds``."""
    deadline = time.monotonic() + float(seconds)
    n = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        while time.monotonic() < deadline:
            sock.sendall(b"rqdoctor message %d\n" % n)
            n += 1
            time.sleep(float(every))
    return n


class Listener:
    """A TCP listener on 127.0.0.1 that reads and counts what clients send (for :func:`send_every`)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="rqdoctor-listener", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(reader)
            reader.start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Redis lock polling ------------------------------------------------------------------


class _MiniRedis:
    """Just enough RESP to SELECT and GET, for venvs without redis-py."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.reader = self.sock.makefile("rb")
        if parts.password:
            user = [unquote(parts.username)] if parts.username else []
            self.call("AUTH", *user, unquote(parts.password))
        db = parts.path.strip("/") or "0"
        self.call("SELECT", db)

    def call(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self) -> Any:
        line = self.reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        return int(rest) if kind == b":" else rest

    def get(self, key: str) -> Any:
        return self.call("GET", key)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError:
        return _MiniRedis(url)
    return redis.Redis.from_url(url)


def redis_lock_poll(redis_url: str, key: str, seconds: float) -> bool:
    """Poll ``GET key`` every 0.2 s until it disappears (True) or ``seconds`` pass (False)."""
    client = _redis_client(redis_url)
    deadline = time.monotonic() + float(seconds)
    try:
        while client.get(key) is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True
    finally:
        client.close()


def redis_lock_acquire(redis_url: str, name: str, seconds: float) -> bool:
    """Wait up to ``seconds`` for redis-py's ``Lock`` ``name`` (held elsewhere): ``Lock.acquire`` polls it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return bool(client.lock(name, timeout=600, sleep=0.1, blocking_timeout=float(seconds)).acquire())
    finally:
        client.close()


# --- database locks ----------------------------------------------------------------------


def _ident(name: str) -> str:
    if not _IDENT.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _mysql_connect(host: str, port: int, user: str, password: str, db: str) -> Any:
    import pymysql

    return pymysql.connect(host=host, port=int(port), user=user, password=password, database=db,
                           autocommit=True)


def mysql_hold_lock(host: str, port: int, user: str, password: str, db: str, table: str,
                    seconds: float) -> None:
    """Lock row 1 of ``table`` (created if missing) with SELECT … FOR UPDATE, then sleep."""
    table = _ident(table)
    conn = _mysql_connect(host, port, user, password, db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS `{table}` "
                        "(id INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
            cur.execute(f"INSERT IGNORE INTO `{table}` VALUES (1, 'rqdoctor')")
            conn.begin()
            cur.execute(f"SELECT * FROM `{table}` WHERE id = 1 FOR UPDATE")
            time.sleep(float(seconds))
        conn.rollback()
    finally:
        conn.close()


def mysql_lock_wait(host: str, port: int, user: str, password: str, db: str, table: str,
                    seconds: float) -> None:
    """Block on row 1 of ``table`` (SELECT … FOR UPDATE) for up to ``seconds`` (error 1205)."""
    table = _ident(table)
    conn = _mysql_connect(host, port, user, password, db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (max(1, int(seconds)),))
            conn.begin()
            cur.execute(f"SELECT * FROM `{table}` WHERE id = 1 FOR UPDATE")
        conn.rollback()
    finally:
        conn.close()


def _pg_connect(host: str, port: int, user: str, password: str, db: str) -> Any:
    """An autocommit connection with psycopg2 (as Frappe uses), else psycopg 3 (as rqdoctor ships)."""
    try:
        import psycopg2 as driver
    except ImportError:
        import psycopg as driver  # type: ignore[no-redef]

    conn = driver.connect(host=host, port=int(port), user=user, password=password, dbname=db)
    conn.autocommit = True
    return conn


def pg_hold_lock(host: str, port: int, user: str, password: str, db: str, table: str,
                 seconds: float) -> None:
    """PostgreSQL: lock row 1 of ``table`` (created if missing) FOR UPDATE, then sleep."""
    table = _ident(table)
    conn = _pg_connect(host, port, user, password, db)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT pg_advisory_xact_lock(4242)")  # serialise concurrent CREATEs
            cur.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (id INT PRIMARY KEY, note TEXT)')
            cur.execute(f"INSERT INTO \"{table}\" VALUES (1, 'rqdoctor') ON CONFLICT DO NOTHING")
            cur.execute("COMMIT")
            cur.execute("BEGIN")
            cur.execute(f'SELECT * FROM "{table}" WHERE id = 1 FOR UPDATE')
            time.sleep(float(seconds))
            cur.execute("ROLLBACK")
    finally:
        conn.close()


def pg_lock_wait(host: str, port: int, user: str, password: str, db: str, table: str,
                 seconds: float) -> None:
    """PostgreSQL: block on row 1 of ``table`` FOR UPDATE for up to ``seconds`` (lock_timeout)."""
    table = _ident(table)
    conn = _pg_connect(host, port, user, password, db)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"SET LOCAL lock_timeout = '{max(1, int(float(seconds) * 1000))}ms'")
            cur.execute(f'SELECT * FROM "{table}" WHERE id = 1 FOR UPDATE')
            cur.execute("ROLLBACK")
    finally:
        conn.close()


# --- tarpit ------------------------------------------------------------------------------


class Tarpit:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers.

    Use as a context manager; ``url`` is an ``http://`` address for ``http_no_timeout``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.connections: list[socket.socket] = []
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Tarpit:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        sock.settimeout(0.2)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="rqdoctor-tarpit", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # includes the 0.2 s accept timeout
                continue
            self.connections.append(conn)  # held open, never read from or written to

    def wait_for_connection(self, timeout: float = 10.0) -> bool:
        """True once at least one client has connected."""
        deadline = time.monotonic() + timeout
        while not self.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(self.connections)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for conn in [*self.connections, self._sock]:
            if conn is not None:
                conn.close()

    def __enter__(self) -> Tarpit:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tarpit(host: str = "127.0.0.1", port: int = 0) -> Tarpit:
    """A new, not yet listening :class:`Tarpit`; ``with tarpit() as t: t.url``."""
    return Tarpit(host, port)


# --- peers beside the bench's own connections, and file locks ----------------------------


def _open_redis(redis_urls: list[str]) -> list[Any]:
    """Open (and use) one connection to each Redis URL, as a Frappe job does with its cache."""
    clients = [_redis_client(u) for u in redis_urls]
    for client in clients:
        if isinstance(client, _MiniRedis):
            client.call("PING")
        else:
            client.ping()
    return clients


def http_beside_redis(url: str, redis_urls: list[str]) -> int:
    """Connect to each Redis in ``redis_urls``, then GET ``url`` with no timeout (blocks on a tarpit)."""
    clients = _open_redis(redis_urls)
    try:
        return http_no_timeout(url)
    finally:
        for client in clients:
            client.close()


def smtp_no_timeout(host: str, port: int, redis_urls: list[str] | None = None) -> int:
    """``smtplib.SMTP(host, port)`` with no timeout (after opening ``redis_urls``): a tarpit never greets."""
    import smtplib

    clients = _open_redis(redis_urls or [])
    try:
        with smtplib.SMTP(host, int(port)) as smtp:  # no timeout, on purpose
            return smtp.noop()[0]
    finally:
        for client in clients:
            client.close()


def file_lock_wait(path: str, seconds: float) -> bool:
    """Take an exclusive OS lock on ``path``: the ``filelock`` package when importable, else ``fcntl.flock``."""
    try:
        import filelock
    except ImportError:
        import fcntl

        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process holds it
            fcntl.flock(f, fcntl.LOCK_UN)
        return True
    with filelock.FileLock(path, timeout=float(seconds)):
        return True


SCENARIOS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (quick, boom, sleep_for, http_no_timeout, wait_child, cpu_loop, thread_deadlock,
              progress, work_between_naps, save_every, send_every, redis_lock_poll, redis_lock_acquire,
              mysql_hold_lock, mysql_lock_wait, pg_hold_lock, pg_lock_wait, http_beside_redis, smtp_no_timeout,
              file_lock_wait, ignore_term)
}
"""Job name -> function; the dotted path for enqueueing is ``rqdoctor.scenarios.<name>``."""
