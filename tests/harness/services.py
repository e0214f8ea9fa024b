"""Redis / MariaDB / PostgreSQL for integration tests: reachability, private DBs, cleanup.

Addresses default to the local services and can be overridden with ``RQDOCTOR_TEST_REDIS``
(``redis://host:port``), ``RQDOCTOR_TEST_MARIADB`` and ``RQDOCTOR_TEST_POSTGRES`` (``host:port``).
Databases are created and dropped with the ``mariadb``/``mysql`` and ``psql`` clients.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from .venvs import cache_root

REDIS_DBS = range(1, 16)
CLAIM_TTL_S = 1800
"""A claim on a shared server lapses after this, should its test run die without releasing it."""
UNAVAILABLE: list[str] = []  # reasons, reported in the terminal summary
_rotation = itertools.count()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def service_unavailable(reason: str) -> None:
    """Fail under CI=true, otherwise skip loudly (stderr + terminal summary)."""
    msg = f"SERVICE UNAVAILABLE: {reason}"
    if in_ci():
        pytest.fail(msg + " (CI=true: a missing service is an error)", pytrace=False)
    UNAVAILABLE.append(msg)
    print(f"\n*** {msg} - skipping ***", file=sys.stderr)
    pytest.skip(msg)


def _hostport(env: str, default: str) -> tuple[str, int]:
    host, _, port = os.environ.get(env, default).rpartition(":")
    return host, int(port)


def tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- Redis -------------------------------------------------------------------------------


_server: subprocess.Popen[bytes] | None = None
_server_url: str | None = None
_claimed: set[int] = set()


def redis_base_url() -> str:
    """``RQDOCTOR_TEST_REDIS``, else a Redis server of this test run's own (see :func:`_own_server`)."""
    if os.environ.get("RQDOCTOR_TEST_REDIS"):
        return os.environ["RQDOCTOR_TEST_REDIS"].rstrip("/")
    return _own_server()


def _own_server() -> str:
    """Start (once per process) a private ``redis-server`` on a free port: no other checkout can touch it.

    Its port is deliberately not one of Redis's usual ports, as on benches that move Redis.
    Stopped by pid when the test process exits.
    """
    global _server, _server_url
    if _server_url is not None and _server is not None and _server.poll() is None:
        return _server_url
    exe = shutil.which("redis-server")
    if exe is None:
        service_unavailable("no redis-server on PATH (or set RQDOCTOR_TEST_REDIS=redis://host:port)")
    workdir = cache_root() / "redis-servers"
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--databases", "16", "--dir", str(workdir), "--logfile", ""],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end and proc.poll() is None:
            if tcp_reachable("127.0.0.1", port, timeout=0.2):
                _server, _server_url = proc, f"redis://127.0.0.1:{port}"
                atexit.register(_stop_server, proc)
                return _server_url
            time.sleep(0.05)
        _stop_server(proc)
    service_unavailable("could not start a private redis-server")
    raise AssertionError("unreachable")


def _free_port() -> int:
    """A free TCP port outside Redis's usual ranges (6379-6389, 11000-13999)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not (6379 <= port < 6390 or 11000 <= port < 14000):
            return port


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def private_redis_db() -> Iterator[str]:
    """Hold one Redis DB (1-15) of this test run's server, flushed before and after.

    With ``RQDOCTOR_TEST_REDIS`` (a shared server) DBs are claimed in Redis itself with ``SET NX``
    and a TTL, so two checkouts never flush each other's.
    """
    import redis

    base = redis_base_url()
    try:
        redis.Redis.from_url(base, socket_timeout=3).ping()
    except redis.RedisError as e:
        service_unavailable(f"Redis at {base}: {e}")
    shared = bool(os.environ.get("RQDOCTOR_TEST_REDIS"))
    start = next(_rotation)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    for i in range(len(REDIS_DBS)):
        db = REDIS_DBS[(start + i) % len(REDIS_DBS)]
        if db in _claimed:
            continue
        claim = redis.Redis.from_url(f"{base}/0")
        claim_key = f"rqdoctor-tests:claim:{db}"
        if shared and not claim.set(claim_key, owner, nx=True, ex=CLAIM_TTL_S):
            claim.close()
            continue
        _claimed.add(db)
        url = f"{base}/{db}"
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
            yield url
        finally:
            client.flushdb()
            client.close()
            _claimed.discard(db)
            if shared and claim.get(claim_key) == owner.encode():
                claim.delete(claim_key)
            claim.close()
        return
    raise RuntimeError(f"all Redis test DBs {REDIS_DBS.start}-{REDIS_DBS.stop - 1} are in use")


# --- SQL databases -----------------------------------------------------------------------


@dataclass(frozen=True)
class DBInfo:
    """Connection facts for a private test database."""

    kind: str  # "mariadb" or "postgres"
    host: str
    port: int
    user: str
    password: str
    database: str

    def scenario_kwargs(self, table: str = "rqd_lock", seconds: float = 60) -> dict[str, object]:
        """Keyword arguments for ``rqdoctor.scenarios.mysql_*`` / ``pg_*`` jobs."""
        return {"host": self.host, "port": self.port, "user": self.user,
                "password": self.password, "db": self.database, "table": table,
                "seconds": seconds}


def _client(kind: str, host: str, port: int, user: str, sql: str) -> subprocess.CompletedProcess[str]:
    if kind == "mariadb":
        exe = shutil.which("mariadb") or shutil.which("mysql")
        cmd = [exe or "mariadb", f"-h{host}", f"-P{port}", f"-u{user}", "--batch", "-N", "-e", sql]
    else:
        exe = shutil.which("psql")
        cmd = [exe or "psql", "-h", host, "-p", str(port), "-U", user, "-d", "postgres",
               "-v", "ON_ERROR_STOP=1", "-Atc", sql]
    if exe is None:
        service_unavailable(f"no {kind} command-line client on PATH")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "MYSQL_PWD": "", "PGCONNECT_TIMEOUT": "5"})


def _sql(kind: str, host: str, port: int, user: str, sql: str) -> str:
    proc = _client(kind, host, port, user, sql)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {sql!r} failed: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def private_database(kind: str) -> Iterator[DBInfo]:
    """Create a uniquely named database on MariaDB or PostgreSQL; drop it afterwards."""
    if kind == "mariadb":
        (host, port), user = _hostport("RQDOCTOR_TEST_MARIADB", "127.0.0.1:3306"), "root"
    else:
        (host, port), user = _hostport("RQDOCTOR_TEST_POSTGRES", "127.0.0.1:5432"), "postgres"
    if not tcp_reachable(host, port):
        service_unavailable(f"{kind} at {host}:{port} does not accept connections")
    probe = _client(kind, host, port, user, "SELECT 1")
    if probe.returncode != 0:
        service_unavailable(f"{kind} at {host}:{port}: {probe.stderr.strip()}")
    name = f"rqd_{uuid.uuid4().hex[:12]}"
    create = f"CREATE DATABASE `{name}`" if kind == "mariadb" else f'CREATE DATABASE "{name}"'
    _sql(kind, host, port, user, create)
    try:
        yield DBInfo(kind, host, port, user, "", name)
    finally:
        if kind == "mariadb":  # end sessions (e.g. a lock holder) using only our database
            ids = _sql(kind, host, port, user, "SELECT ID FROM information_schema.PROCESSLIST "
                       f"WHERE DB = '{name}'").split()
            kills = "".join(f"KILL {i};" for i in ids if i.isdigit())
            if kills:
                _client(kind, host, port, user, kills)
            _sql(kind, host, port, user, f"DROP DATABASE IF EXISTS `{name}`")
        else:
            _sql(kind, host, port, user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 20.0) -> str:
    """The next line ``proc`` prints on stdout that starts with ``prefix`` (an assertion after ``timeout``)."""
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"process {proc.pid} never printed {prefix!r} (exit {proc.poll()})")
