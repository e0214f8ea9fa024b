"""Runner of ``rqdoctor demo``: real RQ workers running shipped hang scenarios, and their cleanup.

The demo claims an empty Redis DB, starts one forking ``rq`` worker per scenario (each in its own
session, as ``python -m rqdoctor.demo worker …``), enqueues the scenario jobs, waits until each
one hangs the way it should, and hands the private Redis URL and the database it used to the
caller, which runs the normal ``hangs`` pipeline. :meth:`Demo.cleanup` removes everything it
started: process groups (SIGTERM, then SIGKILL), the tarpit, the demo database, and the Redis DB.

``rq`` is imported only by the worker entry point and by :meth:`Demo.start` (the ``demo`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psutil
import redis

from rqdoctor import scenarios
from rqdoctor.config import DB_DEFAULT_PORTS, DbTarget
from rqdoctor.errors import RqdoctorError
from rqdoctor.redact import redact_url

MODULE = "rqdoctor.demo"
"""This module's dotted path: workers run ``python -m rqdoctor.demo worker``, PostgreSQL jobs live here."""
QUEUE_PREFIX = "rqdoctor-demo:"
JOB_TIMEOUT_S = 300
"""RQ timeout of every scenario job (plus ``--keep``): the jobs end by themselves after it."""
START_WAIT_S = 25.0
"""How long the scenarios may take to start and reach their hang."""
STOP_GRACE_S = 3.0
"""Seconds between SIGTERM and SIGKILL at cleanup."""
AUTO_DBS = [*range(8, 0, -1), *range(15, 8, -1)]
"""Redis DBs tried in this order when the URL names none: 8 down to 1, then 15 down to 9 (DB 0 is never used)."""
LOCK_KEY = "rqdoctor-demo:lock:nightly-report"
LOCAL_DATABASES = ("mysql://root@127.0.0.1:3306/", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Servers the demo tries when no ``--db-url`` is given (MariaDB first, as on a Frappe bench)."""
DB_TABLE = "demo_lock"
HINT_REDIS = "start a local Redis (e.g. `redis-server`) or pass --redis-url redis://host:port"


@dataclass
class Scenario:
    """One worker, its queue and the job it runs."""

    name: str
    func: str
    kwargs: dict[str, Any]
    what: str
    """One line for the user: what the job does."""
    ready: Callable[[psutil.Process], bool] | None = None
    """Given the horse: True once the job hangs the way it should (default: it started)."""
    after: str | None = None
    """Enqueue only once this scenario is ready (the DB lock waiter needs the holder)."""

    @property
    def queue(self) -> str:
        """The scenario's own queue."""
        return QUEUE_PREFIX + self.name

    @property
    def job_id(self) -> str:
        """The scenario's job id."""
        return f"demo-{self.name}"


# --- the private Redis DB ----------------------------------------------------------------


def url_with_db(url: str, db: int) -> str:
    """``url`` pointing at Redis DB ``db`` (path for redis://, ``?db=`` for unix://)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"]
    if parts.scheme == "unix":  # urlunsplit would drop the empty authority (unix:/path)
        return f"unix://{parts.netloc}{parts.path}?{urlencode([*query, ('db', str(db))])}"
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


def explicit_db(url: str) -> int | None:
    """The DB number the URL names, or None."""
    parts = urlsplit(url)
    named = dict(parse_qsl(parts.query)).get("db") or (parts.path.strip("/") if parts.scheme != "unix" else "")
    if not named:
        return None
    if not named.isdigit():
        raise RqdoctorError(f"--redis-url {redact_url(url)}: bad DB number {named!r}", HINT_REDIS)
    return int(named)


def claim_redis_db(base_url: str, marker: str, ttl: int) -> tuple[redis.Redis, str]:
    """An empty Redis DB (the one the URL names, else 15 down to 1), claimed with ``marker`` (SET NX EX)."""
    named = explicit_db(base_url)
    candidates = [named] if named is not None else list(AUTO_DBS)
    for db in candidates:
        url = url_with_db(base_url, db)
        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        except ValueError as exc:
            raise RqdoctorError(f"invalid Redis URL {redact_url(base_url)}: {exc}", HINT_REDIS) from None
        try:
            if client.dbsize() == 0 and client.set(marker, os.getpid(), nx=True, ex=ttl):
                if client.dbsize() == 1:
                    return client, url
                client.delete(marker)  # another process took it at the same moment
        except redis.ResponseError:
            pass  # e.g. "DB index is out of range" on a server with fewer databases
        except redis.RedisError as exc:
            client.close()
            raise RqdoctorError(f"cannot reach Redis at {redact_url(base_url)}: {exc}", HINT_REDIS) from None
        client.close()
    which = f"DB {named} is not empty" if named is not None else "no empty Redis DB among 1-15"
    raise RqdoctorError(f"{which} on {redact_url(base_url)}; the demo only uses an empty DB",
                        "pass --redis-url redis://host:port/N with an empty DB N")


# --- the database row-lock scenario ------------------------------------------------------


@dataclass
class DemoDatabase:
    """A reachable MariaDB/PostgreSQL server and the temporary database the demo creates there."""

    server: DbTarget
    name: str

    @property
    def label(self) -> str:
        """``MariaDB`` or ``PostgreSQL``."""
        return "PostgreSQL" if self.server.kind == "postgres" else "MariaDB"

    def connect(self, database: str = "") -> Any:
        """An autocommit admin connection with short timeouts."""
        s = self.server
        port = s.port or DB_DEFAULT_PORTS[s.kind]
        if s.kind == "postgres":
            import psycopg

            return psycopg.connect(host=s.host, port=port, user=s.user or "postgres", password=s.password,
                                   dbname=database or s.database or "postgres", connect_timeout=3,
                                   autocommit=True, options="-c statement_timeout=10000")
        import pymysql

        return pymysql.connect(host=s.host, port=port, user=s.user or "root", password=s.password,
                               database=database or None, connect_timeout=3, read_timeout=10,
                               write_timeout=10, autocommit=True)

    def _scalar(self, sql: str, *params: Any) -> Any:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                row = cur.fetchone() if cur.description else None
                return row[0] if row else None
        finally:
            conn.close()

    def create(self) -> None:
        """Create the database and its one-row table."""
        postgres = self.server.kind == "postgres"
        self._scalar(f'CREATE DATABASE "{self.name}"' if postgres else f"CREATE DATABASE `{self.name}`")
        conn = self.connect(self.name)
        try:
            with conn.cursor() as cur:
                engine = "" if postgres else " ENGINE=InnoDB"
                cur.execute(f"CREATE TABLE {DB_TABLE} (id INT PRIMARY KEY, note VARCHAR(64)){engine}")
                cur.execute(f"INSERT INTO {DB_TABLE} VALUES (1, 'nightly report')")
        finally:
            conn.close()

    def drop(self) -> None:
        """End the sessions still using the database, then drop it."""
        if self.server.kind == "postgres":
            self._scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", self.name)
            self._scalar(f'DROP DATABASE IF EXISTS "{self.name}"')
            return
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", (self.name,))
                for (session_id,) in cur.fetchall():
                    with contextlib.suppress(Exception):
                        cur.execute(f"KILL {int(session_id)}")
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        finally:
            conn.close()

    def sessions(self, state: str) -> int:
        """Sessions on the demo database holding a row lock (``holding``) or waiting for one (``waiting``)."""
        if self.server.kind == "postgres":
            where = "state = 'idle in transaction'" if state == "holding" else "wait_event_type = 'Lock'"
            return int(self._scalar(f"SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND {where}",
                                    self.name) or 0)
        where = "t.trx_rows_locked > 0 AND t.trx_state = 'RUNNING'" if state == "holding" else \
            "t.trx_state = 'LOCK WAIT'"
        return int(self._scalar("SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN "
                                "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                                f"WHERE p.DB = %s AND {where}", self.name) or 0)

    def job_kwargs(self, seconds: float) -> dict[str, Any]:
        """Keyword arguments of the hold/wait job functions."""
        s = self.server
        return {"host": s.host, "port": s.port or DB_DEFAULT_PORTS[s.kind], "user": s.user or self._user(),
                "password": s.password, "db": self.name, "table": DB_TABLE, "seconds": seconds}

    def _user(self) -> str:
        return "postgres" if self.server.kind == "postgres" else "root"

    def functions(self) -> tuple[str, str]:
        """Dotted paths of the (hold, wait) job functions."""
        prefix = "pg" if self.server.kind == "postgres" else "mysql"
        return f"rqdoctor.scenarios.{prefix}_hold_lock", f"rqdoctor.scenarios.{prefix}_lock_wait"


def reachable_database(candidates: list[DbTarget], name: str) -> tuple[DemoDatabase | None, str]:
    """The first server that accepts a connection, and why the others were skipped."""
    skipped = []
    for server in candidates:
        db = DemoDatabase(server, name)
        try:
            db.connect().close()
            return db, ""
        except Exception as exc:  # any driver error means "not usable for the demo"
            skipped.append(f"{db.label} at {server.redacted()}: {str(exc).splitlines()[0][:120]}")
    return None, "; ".join(skipped)


# --- the demo ----------------------------------------------------------------------------


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Worker:
    """A started worker process and every descendant seen so far (for cleanup)."""

    scenario: Scenario
    popen: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The worker and its live descendants now; each is remembered for cleanup."""
        try:
            leader = psutil.Process(self.popen.pid)
            procs = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def horse(self) -> psutil.Process | None:
        """The work-horse: a child leading its own process group."""
        for p in self.tree()[1:]:
            with contextlib.suppress(OSError):
                if p.ppid() == self.popen.pid and os.getpgid(p.pid) == p.pid:
                    return p
        return None

    def log_tail(self) -> str:
        """The last line of the worker's output."""
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            return lines[-1][:200] if lines else ""
        return ""


@dataclass
class Demo:
    """Everything one demo run started, so that :meth:`cleanup` can remove it."""

    base_url: str
    keep_s: float = 0.0
    db_candidates: list[DbTarget] = field(default_factory=list)
    say: Callable[[str], None] = print
    redis_url: str = ""
    """The private Redis DB (holds a password if the base URL does)."""
    database: DemoDatabase | None = None
    scenarios: list[Scenario] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    _client: redis.Redis | None = None
    _tarpit: scenarios.Tarpit | None = None
    _logs: Path | None = None

    @property
    def job_timeout(self) -> int:
        """RQ timeout of the scenario jobs."""
        return JOB_TIMEOUT_S + int(self.keep_s)

    @property
    def marker(self) -> str:
        """The key that claims the Redis DB for this run."""
        return f"rqdoctor:demo:{os.getpid()}"

    @property
    def ttl(self) -> int:
        """Seconds the marker and the lock key live: past the end of every job."""
        return self.job_timeout + int(START_WAIT_S) + 120

    def claim(self) -> None:
        """Claim an empty Redis DB (raises :class:`RqdoctorError` when there is none or Redis is down)."""
        self._client, self.redis_url = claim_redis_db(self.base_url, self.marker, self.ttl)

    def start(self) -> None:
        """Start the workers, enqueue the scenarios and wait until they hang (after :meth:`claim`)."""
        assert self._client is not None
        self._logs = Path(tempfile.mkdtemp(prefix="rqdoctor-demo-"))
        self._tarpit = scenarios.tarpit().start()
        self._client.set(LOCK_KEY, "held by a job that died long ago", ex=self.ttl)
        self.scenarios = self._plan()
        self.workers = [self._spawn(s) for s in self.scenarios]
        self._enqueue_and_wait()

    def _plan(self) -> list[Scenario]:
        seconds = self.job_timeout
        tarpit = self._tarpit
        assert tarpit is not None
        plan = [
            Scenario("http", "rqdoctor.scenarios.http_no_timeout", {"url": tarpit.url},
                     "HTTP GET without a timeout to a local server that never answers",
                     ready=lambda _horse: bool(tarpit.connections)),
            Scenario("subprocess", "rqdoctor.scenarios.wait_child", {"seconds": seconds},
                     "waits on a child process that does not exit", ready=lambda horse: bool(horse.children())),
            Scenario("cpu", "rqdoctor.scenarios.cpu_loop", {"seconds": seconds},
                     "spins in a pure-Python CPU loop"),
            Scenario("deadlock", "rqdoctor.scenarios.thread_deadlock", {},
                     "two threads take two locks in opposite order"),
            Scenario("redis-lock", "rqdoctor.scenarios.redis_lock_poll",
                     {"redis_url": self.redis_url, "key": LOCK_KEY, "seconds": seconds},
                     f"polls the Redis lock key {LOCK_KEY}, which nobody releases"),
        ]
        db = self._create_database()
        if db is None:
            return plan
        hold, wait = db.functions()
        kwargs = db.job_kwargs(seconds)
        plan += [
            Scenario("db-holder", hold, kwargs, f"{db.label}: locks a row (SELECT … FOR UPDATE) and sleeps",
                     ready=lambda _horse: db.sessions("holding") > 0),
            Scenario("db-waiter", wait, kwargs, f"{db.label}: waits for that row lock",
                     ready=lambda _horse: db.sessions("waiting") > 0, after="db-holder"),
        ]
        return plan

    def _create_database(self) -> DemoDatabase | None:
        db, reason = reachable_database(self.db_candidates, f"rqdoctor_demo_{os.getpid()}_{os.urandom(2).hex()}")
        if db is None:
            if reason:
                self.say(f"no database scenario: {reason}")
            return None
        try:
            db.create()
        except Exception as exc:  # the other scenarios still run
            self.say(f"no database scenario: cannot create {db.label} database {db.name}: {exc}")
            with contextlib.suppress(Exception):
                db.drop()
            return None
        self.database = db
        return db

    def _spawn(self, scenario: Scenario) -> Worker:
        assert self._logs is not None
        log = self._logs / f"{scenario.name}.log"
        argv = [sys.executable, "-m", MODULE, "worker", "--url", self.redis_url, "--queue", scenario.queue,
                "--name", f"demo-{scenario.name}", "--max-idle", str(self.job_timeout)]
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return Worker(scenario, popen, log)

    def _enqueue_and_wait(self) -> None:
        """Enqueue each job (a dependent one once its predecessor hangs) and wait until all hang."""
        from rq import Queue

        pending = {w.scenario.name: w for w in self.workers}
        queued: set[str] = set()
        failed: list[str] = []
        deadline = time.monotonic() + START_WAIT_S
        while pending and time.monotonic() < deadline:
            for name, worker in list(pending.items()):
                s = worker.scenario
                if name not in queued and (s.after is None or s.after not in pending):
                    Queue(s.queue, connection=self._client).enqueue_call(
                        s.func, kwargs=s.kwargs, timeout=self.job_timeout, job_id=s.job_id, result_ttl=60,
                        failure_ttl=60)
                    queued.add(name)
                if name in queued and self._hanging(worker):
                    del pending[name]
                elif worker.popen.poll() is not None or self._status(s) in ("finished", "failed"):
                    del pending[name]
                    failed.append(name)
                    self.say(f"scenario {name} ended early: {worker.log_tail() or 'no output'}")
            time.sleep(0.2)
        if pending:
            self.say(f"not ready within {START_WAIT_S:.0f} s (shown anyway): {', '.join(sorted(pending))}")
        if len(failed) == len(self.workers):
            raise RqdoctorError("no scenario could start", "see the lines above; please report this as a bug")

    def _status(self, scenario: Scenario) -> str:
        assert self._client is not None
        raw = self._client.hget(f"rq:job:{scenario.job_id}", "status")
        return raw.decode() if raw else ""

    def _hanging(self, worker: Worker) -> bool:
        horse = worker.horse()
        if horse is None or self._status(worker.scenario) != "started":
            return False
        try:
            return worker.scenario.ready is None or worker.scenario.ready(horse)
        except Exception:  # not ready yet (the horse exited, a query failed): ask again
            return False

    def db_targets(self) -> list[DbTarget]:
        """The database server the demo used, to be probed like ``--db-url``."""
        return [self.database.server] if self.database is not None else []

    def pids(self) -> set[int]:
        """Every process the demo started (workers, horses, their children) seen so far."""
        for w in self.workers:
            w.tree()
        return {pid for w in self.workers for pid in w.seen}

    def cleanup(self) -> str:
        """Remove everything this run started; one line saying what was removed."""
        done: list[str] = []
        if self.workers:
            survivors = self._stop_workers()
            n = len({pid for w in self.workers for pid in w.seen})
            done.append(f"{len(self.workers)} workers ({n} processes)")
            if survivors:
                done.append(f"NOT stopped: pids {', '.join(map(str, sorted(survivors)))}")
        if self._tarpit is not None:
            self._tarpit.close()
            done.append("the tarpit")
        if self.database is not None:
            try:
                self.database.drop()
                done.append(f"{self.database.label} database {self.database.name}")
            except Exception as exc:  # report it and go on cleaning
                done.append(f"NOT dropped: {self.database.label} database {self.database.name} ({exc})")
        if self._client is not None:
            try:
                self._client.flushdb()
                done.append(f"Redis DB {redact_url(self.redis_url)} (FLUSHDB)")
            except redis.RedisError as exc:
                done.append(f"NOT flushed: Redis DB {redact_url(self.redis_url)} ({exc})")
            self._client.close()
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
        return "removed " + ", ".join(done) if done else "nothing to remove"

    def _stop_workers(self) -> set[int]:
        """SIGTERM, then SIGKILL, every process group and process the workers made; pids left alive."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = self._alive()
            if not alive:
                break
            for p in alive:
                with contextlib.suppress(OSError):
                    if os.getpgid(p.pid) == p.pid:
                        os.killpg(p.pid, sig)
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)  # psutil checks that the pid was not reused
            deadline = time.monotonic() + STOP_GRACE_S
            while self._alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        return {p.pid for p in self._alive()}

    def _alive(self) -> list[psutil.Process]:
        for w in self.workers:
            w.tree()
            w.popen.poll()  # reap the worker as soon as it exits
        return [p for w in self.workers for p in w.seen.values() if _running(p)]


# --- worker entry point: python -m rqdoctor.demo worker --url … --queue … -----------------


def worker_main(argv: list[str]) -> int:
    """Run one forking RQ worker on one queue until it has been idle ``--max-idle`` seconds."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one RQ worker for the demo")
    worker.add_argument("--url", required=True)
    worker.add_argument("--queue", required=True)
    worker.add_argument("--name", required=True)
    worker.add_argument("--max-idle", type=int, default=JOB_TIMEOUT_S)
    args = parser.parse_args(argv)
    from rq import Queue
    from rq import Worker as RqWorker

    connection = redis.Redis.from_url(args.url)
    rq_worker = RqWorker([Queue(args.queue, connection=connection)], connection=connection, name=args.name)
    rq_worker.work(logging_level="WARNING", max_idle_time=args.max_idle)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
