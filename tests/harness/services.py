"""Redis / MariaDB / PostgreSQL for integration tests: reachability, private DBs, cleanup.

Addresses default to the local services and can be overridden with ``RQDOCTOR_TEST_REDIS``
(``redis://host:port``), ``RQDOCTOR_TEST_MARIADB`` and ``RQDOCTOR_TEST_POSTGRES`` (``host:port``).
Databases are created and dropped with the ``mariadb``/``mysql`` and ``psql`` clients.
"""

from __future__ import annotations

import fcntl
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

REDIS_DBS = range(9, 16)
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


def redis_base_url() -> str:
    return os.environ.get("RQDOCTOR_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")


@contextmanager
def private_redis_db() -> Iterator[str]:
    """Hold one of Redis DBs 9-15 (file-locked across processes), flushed before and after."""
    import redis

    base = redis_base_url()
    try:
        redis.Redis.from_url(base, socket_timeout=3).ping()
    except redis.RedisError as e:
        service_unavailable(f"Redis at {base}: {e}")
    start = next(_rotation)
    for i in range(len(REDIS_DBS)):
        db = REDIS_DBS[(start + i) % len(REDIS_DBS)]
        with open(cache_root() / f"redis-db-{db}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            url = f"{base}/{db}"
            client = redis.Redis.from_url(url)
            try:
                client.flushdb()
                yield url
            finally:
                client.flushdb()
                client.close()
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
