"""End to end: the real ``rqdoctor`` console script on real workers, real MariaDB / PostgreSQL lock waits.

Every test lays out a bench, starts real rq workers (rq 1.15 and 2.6 flavours), makes real sessions
block each other, runs ``rqdoctor hangs`` / ``rqdoctor locks`` as a subprocess and reads its output.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pymysql
import pytest
import redis

from rqdoctor import scenarios
from tests.harness.bench import Bench, seeded_secret
from tests.harness.services import DBInfo, read_line
from tests.harness.workers import WorkerProcess, Workers, enqueue, wait_for_job_started

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RQDOCTOR = Path(sys.executable).with_name("rqdoctor")
ADMIN = {"mariadb": "mysql://root@127.0.0.1:3306/", "postgres": "postgresql://postgres@127.0.0.1:5432/"}
TABLE = "tabBin"
HOLD = {"mariadb": "rqdoctor.scenarios.mysql_hold_lock", "postgres": "rqdoctor.scenarios.pg_hold_lock"}
WAIT = {"mariadb": "rqdoctor.scenarios.mysql_lock_wait", "postgres": "rqdoctor.scenarios.pg_lock_wait"}
FAST = ("--samples", "2", "--interval", "0.2", "--min-age", "1")
_CLEAN_ENV = ("RQDOCTOR_REDIS_URL", "FRAPPE_REDIS_QUEUE", "RQ_REDIS_URL", "REDIS_URL", "FRAPPE_BENCH_ROOT",
              "FRAPPE_DB_TYPE", "FRAPPE_DB_NAME", "FRAPPE_DB_USER", "FRAPPE_DB_PASSWORD", "FRAPPE_DB_HOST",
              "FRAPPE_DB_PORT", "FRAPPE_DB_SOCKET")


def _db(kind: str, flavour: str) -> Any:
    return pytest.param(kind, flavour, marks=getattr(pytest.mark, kind), id=f"{kind}-{flavour}")


@pytest.fixture
def db(request: pytest.FixtureRequest) -> DBInfo:
    """A private database on the server named by the test's parameter (``mariadb`` / ``postgres``)."""
    return request.getfixturevalue(request.param)


# --- running the console script ----------------------------------------------------------------------------


@dataclass
class Run:
    """One finished ``rqdoctor`` command."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"rqdoctor {' '.join(self.args)}: no JSON (exit {self.code})\n"
                                 f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}") from None

    def __str__(self) -> str:
        return f"rqdoctor {' '.join(self.args)} -> exit {self.code} in {self.seconds:.1f}s\n{self.stderr[-1500:]}"


def rqdoctor(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> Run:
    """Run the installed console script (no Redis/DB env, plus ``env``)."""
    env = {**{k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}, **(env or {})}
    env.update(COLUMNS="250", NO_COLOR="1", TERM="dumb")
    started = time.monotonic()
    proc = subprocess.run([str(RQDOCTOR), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    return Run(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def hangs(bench: Bench, *extra: str, cwd: Path) -> Run:
    return rqdoctor("hangs", "--bench", str(bench.root), "--format", "json", "--timeout", "20", *FAST, *extra,
                    cwd=cwd)


def locks(bench: Bench, *extra: str, cwd: Path, fmt: str = "json") -> Run:
    return rqdoctor("locks", "--bench", str(bench.root), "--format", fmt, "--timeout", "20", *extra, cwd=cwd)


def job_row(report: dict[str, Any], job_id: str) -> dict[str, Any]:
    rows = {j["job_id"]: j for j in report["jobs"]}
    assert job_id in rows, f"job {job_id} not in the report: {sorted(rows)}; errors {report['errors']}"
    return rows[job_id]


def findings(report: dict[str, Any], code: str, session: int | None = None) -> list[dict[str, Any]]:
    """Findings of ``code``; with ``session``, only those about it (the servers are shared with other tests)."""
    return [f for f in report["findings"] if f["code"] == code and (
        session is None or f["subject"] == f"db session {session}" or session in f["data"].get("chain", []))]


def kill(kind: str, session: int) -> str:
    return f"SELECT pg_terminate_backend({session});" if kind == "postgres" else f"KILL {session};"


# --- database clients in their own processes ---------------------------------------------------------------

CLIENT = r"""
import json, os, sys, time
spec = json.loads(os.environ["RQD_CLIENT"])
if spec["kind"] == "mariadb":
    import pymysql
    where = spec["where"]
    at = {"unix_socket": where} if where.startswith("/") else {"host": where, "port": spec["port"]}
    conn = pymysql.connect(user=spec["user"], password=spec["password"], database=spec["db"], autocommit=True, **at)
    run = lambda sql: conn.cursor().execute(sql)
    session = conn.thread_id()
else:
    import psycopg
    conn = psycopg.connect(host=spec["where"], port=spec["port"], user=spec["user"],
                           password=spec["password"] or None, dbname=spec["db"], autocommit=True)
    run = conn.execute
    session = conn.info.backend_pid
print("session", session, flush=True)
for sql in spec["steps"]:
    if sql == "READY":
        print("ready", flush=True)
    else:
        run(sql)
time.sleep(300)
"""


@dataclass
class Client:
    """A database client process (its argv names it, e.g. ``gunicorn``), running SQL steps then idling."""

    proc: subprocess.Popen[str]
    session: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, prefix: str, timeout: float = 30) -> str:
        return read_line(self.proc, prefix, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()


@dataclass
class Clients:
    folder: Path
    started: list[Client] = field(default_factory=list)

    def python(self, name: str, info: DBInfo, *steps: str, where: str | None = None, user: str | None = None,
               password: str | None = None, argv: tuple[str, ...] = (), wait_ready: bool = True) -> Client:
        """``python <folder>/<name> *argv``: connects (credentials via the environment), runs ``steps``."""
        script = self.folder / name
        script.write_text(CLIENT)
        spec = {"kind": info.kind, "where": where or info.host, "port": info.port, "user": user or info.user,
                "password": info.password if password is None else password, "db": info.database,
                "steps": list(steps)}
        proc = subprocess.Popen([sys.executable, str(script), *argv], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "RQD_CLIENT": json.dumps(spec)})
        client = self._track(Client(proc))
        client.session = int(client.line("session").split()[1])
        if wait_ready:
            client.line("ready")
        return client

    def cli(self, argv: list[str], *statements: str) -> Client:
        """A ``mysql`` / ``psql`` client fed on a pipe left open: it idles after the statements."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        client = self._track(Client(proc))
        assert proc.stdin is not None
        proc.stdin.write("".join(s + "\n" for s in statements))
        proc.stdin.flush()
        client.session = int(client.line("session=").strip().split("=")[1])
        return client

    def _track(self, client: Client) -> Client:
        self.started.append(client)
        return client


@pytest.fixture
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    """Client processes, killed (by pid) at teardown."""
    made = Clients(tmp_path_factory.mktemp("clients"))
    yield made
    for client in made.started:
        client.stop()


def sql(info: DBInfo, *statements: str, database: str | None = None) -> list[tuple[Any, ...]]:
    """Run statements as the server's admin; the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    if info.kind == "mariadb":
        conn = pymysql.connect(host=info.host, port=info.port, user=info.user, password=info.password,
                               database=database if database is not None else info.database, autocommit=True,
                               connect_timeout=10)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    rows = list(cur.fetchall())
        finally:
            conn.close()
        return rows
    import psycopg

    with psycopg.connect(host=info.host, port=info.port, user=info.user, dbname=database or info.database,
                         autocommit=True, connect_timeout=10) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else []
    return rows


def ident(kind: str, name: str) -> str:
    return f"`{name}`" if kind == "mariadb" else f'"{name}"'


def make_table(info: DBInfo) -> None:
    engine = " ENGINE=InnoDB" if info.kind == "mariadb" else ""
    sql(info, f"CREATE TABLE {ident(info.kind, TABLE)} (id INT PRIMARY KEY, note VARCHAR(64)){engine}",
        f"INSERT INTO {ident(info.kind, TABLE)} VALUES (1, 'rqdoctor')")


def hold_row(info: DBInfo) -> tuple[str, ...]:
    return ("BEGIN", f"SELECT * FROM {ident(info.kind, TABLE)} WHERE id = 1 FOR UPDATE", "READY")


def waiting_sessions(info: DBInfo) -> int:
    """Sessions of the private database waiting on a row or metadata lock now."""
    if info.kind == "mariadb":
        rows = sql(info, "SELECT COUNT(*) FROM information_schema.PROCESSLIST p "
                   "LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
                   f"WHERE p.DB = '{info.database}' AND (t.trx_state = 'LOCK WAIT' OR p.STATE LIKE '%metadata lock%')")
    else:
        rows = sql(info, "SELECT count(*) FROM pg_stat_activity "
                   f"WHERE datname = '{info.database}' AND wait_event_type = 'Lock'", database="postgres")
    return int(rows[0][0])


def wait_for_waiters(info: DBInfo, count: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while waiting_sessions(info) < count:
        if time.monotonic() > end:
            raise AssertionError(f"{count} lock waiter(s) never showed up in {info.database}")
        time.sleep(0.3)


# --- benches and jobs ---------------------------------------------------------------------------------------


def one_site_bench(make_bench: Callable[..., Bench], kind: str, **site: Any) -> Bench:
    """A bench with one site whose site_config.json gets ``site`` on top of the harness's."""
    bench = make_bench(sites=("site1.local",), db_type=kind)
    if site:
        path = bench.sites_path / "site1.local" / "site_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **site}, indent=1))
    return bench


def start_job(r: redis.Redis, flavour: str, bench: Bench, worker: WorkerProcess, qtype: str, method: str,
              kwargs: dict[str, Any], **kw: Any) -> tuple[str, int]:
    """Enqueue a job onto ``qtype`` and wait until its horse runs it; (job id, horse pid)."""
    job_id = enqueue(flavour, bench.redis_url, bench.queue(qtype), method, kwargs, **kw)
    return job_id, wait_for_job_started(r, job_id, worker, timeout=60).executing_pid


def lock_kwargs(info: DBInfo, seconds: float = 90, **over: Any) -> dict[str, Any]:
    return {**info.scenario_kwargs(table=TABLE, seconds=seconds), **over}


# --- 1. a web request holds the row lock a job waits for ------------------------------------------------------


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq115"), _db("postgres", "rq26")], indirect=["db"])
def test_web_request_holding_a_row_lock_blocks_a_job(db: DBInfo, flavour: str, make_bench: Callable[..., Bench],
                                                       workers: Workers, redis_client: redis.Redis,
                                                       clients: Clients, tmp_path: Path) -> None:
    bench = one_site_bench(make_bench, db.kind, db_name=db.database)  # the bench scope is its sites' databases
    worker = workers.frappe(bench, flavour, ("long",))
    make_table(db)
    web = clients.python("gunicorn", db, *hold_row(db), argv=("-b", "127.0.0.1:8000", "frappe.app:application"))
    job_id, horse = start_job(redis_client, flavour, bench, worker, "long", WAIT[db.kind], lock_kwargs(db))
    wait_for_waiters(db, 1)
    time.sleep(1.5)  # let the blocker idle a measurable while

    run = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path)
    report = run.json()
    assert run.code == 1, run
    row = job_row(report, job_id)
    assert (row["pid"], row["location"], row["runner_role"]) == (horse, "local", "horse"), row
    assert row["activity"]["kind"] == "db_lock_wait", row["activity"]
    blocker = row["blocker"]
    assert blocker is not None, report["errors"]
    assert (blocker["role"], blocker["pid"], blocker["session_id"], blocker["job_id"]) == (
        "web-worker", web.pid, web.session, None), blocker
    assert re.fullmatch(r"idle in transaction for \d+ s", blocker["doing"]), blocker
    assert blocker["trx_age_s"] is not None and blocker["trx_age_s"] >= 1
    assert TABLE in (blocker["table"] or ""), blocker
    assert (blocker["lock_kind"], blocker["cycle"], blocker["kill"]) == ("row", False, kill(db.kind, web.session))
    assert f"web worker pid {web.pid}" in blocker["summary"]
    (victim,) = findings(report, "RQD401")
    assert (victim["job_id"], victim["pid"], victim["data"]["blocker"]["session_id"]) == (job_id, horse, web.session)
    assert victim["commands"] == [kill(db.kind, web.session)]
    (idle,) = findings(report, "RQD402", web.session)
    assert (idle["subject"], idle["pid"]) == (f"db session {web.session}", web.pid)
    assert "RQD401" in row["findings"]
    assert not [e for e in report["errors"] if e["probe"] == "database"], report["errors"]
    sessions = {s["session_id"]: s for s in report["snapshot"]["database"]["sessions"]}
    assert (sessions[web.session]["client_pid"], sessions[web.session]["client_match"]) == (web.pid, "tcp")
    web_process = next(p for p in report["snapshot"]["processes"] if p["pid"] == web.pid)
    assert any(a.endswith("/gunicorn") for a in web_process["cmdline"])

    graph = locks(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path)
    edges = [e for e in graph.json()["locks"] if e["waiting"]["job_id"] == job_id]
    assert graph.code == 1, graph
    assert len(edges) == 1, graph.json()["locks"]
    assert edges[0]["waiting"]["pid"] == horse and edges[0]["waiting"]["role"] == "rq-job"
    assert {k: edges[0]["blocker"][k] for k in ("session_id", "pid", "role", "kill")} == {
        "session_id": web.session, "pid": web.pid, "role": "web-worker", "kill": kill(db.kind, web.session)}
    assert [f["code"] for f in graph.json()["findings"] if f["job_id"] == job_id or f["pid"] == web.pid] == [
        "RQD401", "RQD402"]

    text = locks(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path, fmt="text")
    assert text.code == 1, text
    assert kill(db.kind, web.session) in text.stdout, text.stdout
    assert "web-worker" in text.stdout and "RQD401" in text.stdout and "RQD402" in text.stdout


# --- 2. a job holds its transaction open while another job waits on it -------------------------------------------


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq26"), _db("postgres", "rq115")], indirect=["db"])
def test_job_holding_a_transaction_blocks_another_job(db: DBInfo, flavour: str, make_bench: Callable[..., Bench],
                                                       workers: Workers, redis_client: redis.Redis,
                                                       tmp_path: Path) -> None:
    bench = one_site_bench(make_bench, db.kind, db_name=db.database)  # the bench scope is its sites' databases
    short, long = workers.frappe(bench, flavour, ("short",)), workers.frappe(bench, flavour, ("long",))
    holder, holder_pid = start_job(redis_client, flavour, bench, short, "short", HOLD[db.kind],
                                   lock_kwargs(db, seconds=120), job_id="holdlock")
    time.sleep(1.0)  # the holder creates the table and takes the lock
    victim, victim_pid = start_job(redis_client, flavour, bench, long, "long", WAIT[db.kind], lock_kwargs(db),
                                   job_id="lockwait")
    wait_for_waiters(db, 1)

    run = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path)
    report = run.json()
    assert run.code == 1, run
    row = job_row(report, victim)
    assert row["pid"] == victim_pid and row["activity"]["kind"] == "db_lock_wait", row
    blocker = row["blocker"]
    assert (blocker["role"], blocker["job_id"], blocker["pid"]) == ("rq-job", holder, holder_pid), blocker
    assert blocker["doing"].startswith("idle in transaction for "), blocker
    assert blocker["kill"] == kill(db.kind, blocker["session_id"])
    assert f"RQ job {holder}" in blocker["summary"]
    assert job_row(report, holder)["blocker"] is None
    assert job_row(report, holder)["activity"]["kind"] != "db_lock_wait"
    (finding,) = findings(report, "RQD401")
    assert f"the blocker is RQ job {holder}" in finding["evidence"]
    (idle,) = findings(report, "RQD402", blocker["session_id"])
    assert (idle["job_id"], idle["pid"]) == (holder, holder_pid)
    assert "RQD402" not in row["findings"] and "RQD402" in job_row(report, holder)["findings"]


# --- 3. DDL behind an open transaction: metadata-lock wait ---------------------------------------------------------


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq115"), _db("postgres", "rq26")], indirect=["db"])
def test_ddl_behind_an_open_transaction_is_a_metadata_lock_wait(db: DBInfo, flavour: str,
                                                                 make_bench: Callable[..., Bench], workers: Workers,
                                                                 redis_client: redis.Redis, clients: Clients,
                                                                 tmp_path: Path) -> None:
    bench = one_site_bench(make_bench, db.kind, db_name=db.database)  # the bench scope is its sites' databases
    short, long = workers.frappe(bench, flavour, ("short",)), workers.frappe(bench, flavour, ("long",))
    holder, holder_pid = start_job(redis_client, flavour, bench, short, "short", HOLD[db.kind],
                                   lock_kwargs(db, seconds=120))
    time.sleep(1.5)
    timeout = "SET SESSION lock_wait_timeout = 120" if db.kind == "mariadb" else "SET lock_timeout = '120s'"
    alter = f"ALTER TABLE {ident(db.kind, TABLE)} ADD COLUMN extra INT"
    migrate = clients.python("migrate", db, timeout, "READY", alter)
    wait_for_waiters(db, 1)
    # a job touching the table now queues behind the waiting DDL
    victim, victim_pid = start_job(redis_client, flavour, bench, long, "long", WAIT[db.kind], lock_kwargs(db))
    wait_for_waiters(db, 2)

    report = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path).json()
    ddl = findings(report, "RQD404", migrate.session)
    assert len(ddl) == 1, [(f["code"], f["subject"]) for f in report["findings"]]
    assert ddl[0]["pid"] == migrate.pid
    assert "ALTER TABLE" in ddl[0]["evidence"][0] and TABLE in ddl[0]["evidence"][0]
    blocker = ddl[0]["data"]["blocker"]
    assert (blocker["lock_kind"], blocker["role"], blocker["job_id"], blocker["pid"]) == (
        "metadata", "rq-job", holder, holder_pid), blocker
    assert ddl[0]["commands"] == [blocker["kill"]]

    row = job_row(report, victim)
    assert row["pid"] == victim_pid and row["activity"]["kind"] == "db_lock_wait", row["activity"]
    assert (row["blocker"]["session_id"], row["blocker"]["pid"]) == (migrate.session, migrate.pid), row["blocker"]
    assert row["blocker"]["doing"].startswith("running `ALTER TABLE"), row["blocker"]
    assert row["blocker"]["lock_kind"] == "metadata"
    (victim_session,) = [s["session_id"] for s in report["snapshot"]["database"]["sessions"]
                         if s["client_pid"] == victim_pid]
    chain = [victim_session, migrate.session, blocker["session_id"]]
    assert (row["blocker"]["chain"], row["blocker"]["cycle"]) == (chain, False), row["blocker"]
    (finding,) = [f for f in findings(report, "RQD401") if f["job_id"] == victim]
    assert "for a metadata lock" in finding["evidence"][0]
    (head,) = findings(report, "RQD405", migrate.session)  # job -> migrate -> holder job: end the head
    assert head["data"]["chain"] == chain and head["commands"] == [blocker["kill"]], head


# --- 4. a client on a Unix socket --------------------------------------------------------------------------------


def unix_client(db: DBInfo, clients: Clients, hold: bool = True) -> Client:
    """``mysql``/``psql`` over the server's Unix socket, holding row 1 inside an open transaction (or idle)."""
    table = ident(db.kind, TABLE)
    if db.kind == "mariadb":
        (path,) = sql(db, "SELECT @@socket")[0]
        argv = ["mysql", "--unbuffered", "-N", "-B", f"--socket={path}", "-uroot", db.database]
        session = "SELECT CONCAT('session=', CONNECTION_ID());"
    else:
        argv = ["psql", "-X", "-q", "-At", "-h", "/var/run/postgresql", "-U", "postgres", "-d", db.database]
        session = "SELECT 'session=' || pg_backend_pid();"
    lock = ("BEGIN;", f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE;") if hold else ()
    return clients.cli(argv, *lock, session)


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq26"), _db("postgres", "rq115")], indirect=["db"])
def test_blocker_on_a_unix_socket_is_matched_or_reported_unmatched(db: DBInfo, flavour: str,
                                                                    make_bench: Callable[..., Bench],
                                                                    workers: Workers, redis_client: redis.Redis,
                                                                    clients: Clients, tmp_path: Path) -> None:
    bench = one_site_bench(make_bench, db.kind, db_name=db.database)  # the bench scope is its sites' databases
    worker = workers.frappe(bench, flavour, ("long",))
    make_table(db)
    cli = unix_client(db, clients)
    job_id, horse = start_job(redis_client, flavour, bench, worker, "long", WAIT[db.kind], lock_kwargs(db))
    wait_for_waiters(db, 1)

    report = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path).json()
    row = job_row(report, job_id)
    blocker = row["blocker"]
    assert row["pid"] == horse and row["activity"]["kind"] == "db_lock_wait", row
    assert blocker is not None and blocker["session_id"] == cli.session, report["errors"]
    session = next(s for s in report["snapshot"]["database"]["sessions"] if s["session_id"] == cli.session)
    assert session["client_port"] is None, session
    if db.kind == "postgres":  # a backend's own socket names its client exactly
        assert (session["client_match"], session["client_pid"]) == ("unix", cli.pid), session
    if session["client_pid"] is not None:
        assert session["client_match"] == "unix" and session["client_pid"] == cli.pid, session
        assert (blocker["role"], blocker["pid"]) == ("db-client", cli.pid), blocker
    else:  # several local processes on the MariaDB socket: unknown, and said so
        assert session["client_match"] in ("unix_ambiguous", "no_local_socket"), session
        assert (blocker["role"], blocker["pid"]) == ("unmatched", None), blocker
    assert blocker["kill"] == kill(db.kind, cli.session)
    assert [f["job_id"] for f in findings(report, "RQD401")] == [job_id]

    if db.kind == "mariadb":  # a second local client on the socket: MariaDB cannot say which one is which
        other = unix_client(db, clients, hold=False)
        report = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path).json()
        sessions = {s["session_id"]: s for s in report["snapshot"]["database"]["sessions"]}
        for sid in (cli.session, other.session):
            assert (sessions[sid]["client_pid"], sessions[sid]["client_match"]) == (None, "unix_ambiguous"), sessions
        blocker = job_row(report, job_id)["blocker"]
        assert (blocker["session_id"], blocker["role"], blocker["pid"]) == (cli.session, "unmatched", None), blocker
        assert blocker["kill"] == kill(db.kind, cli.session)  # the fix still names the session to end


# --- 5. site credentials (limited) versus an admin URL ---------------------------------------------------------


@pytest.fixture
def site_account(db: DBInfo) -> Iterator[tuple[str, str]]:
    """A real, unprivileged account named like the site's database (Frappe's default user); (user, password)."""
    user, password = db.database, seeded_secret(db.database, "site-account")
    if db.kind == "mariadb":
        hosts = ("localhost", "127.0.0.1")
        for host in hosts:
            sql(db, f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'",
                f"GRANT ALL PRIVILEGES ON `{db.database}`.* TO '{user}'@'{host}'")
    else:
        sql(db, f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'",
            f"ALTER DATABASE \"{db.database}\" OWNER TO \"{user}\"", database="postgres")
    yield user, password
    if db.kind == "mariadb":
        for host in hosts:
            sql(db, f"DROP USER IF EXISTS '{user}'@'{host}'")
    else:
        sql(db, f"DROP DATABASE IF EXISTS \"{db.database}\" WITH (FORCE)", f'DROP ROLE IF EXISTS "{user}"',
            database="postgres")


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq115"), _db("postgres", "rq26")], indirect=["db"])
def test_site_credentials_say_what_they_cannot_see_and_admin_url_sees_all(
        db: DBInfo, flavour: str, site_account: tuple[str, str], make_bench: Callable[..., Bench],
        workers: Workers, redis_client: redis.Redis, tmp_path: Path) -> None:
    user, password = site_account
    bench = one_site_bench(make_bench, db.kind, db_name=db.database, db_password=password)
    short, long = workers.frappe(bench, flavour, ("short",)), workers.frappe(bench, flavour, ("long",))
    as_site = {"user": user, "password": password}
    holder, _ = start_job(redis_client, flavour, bench, short, "short", HOLD[db.kind],
                          lock_kwargs(db, seconds=120, **as_site))
    time.sleep(1.0)
    victim, victim_pid = start_job(redis_client, flavour, bench, long, "long", WAIT[db.kind],
                                   lock_kwargs(db, **as_site))
    wait_for_waiters(db, 1)
    dsn = f"{'mysql' if db.kind == 'mariadb' else 'postgresql'}://{user}:***@127.0.0.1:" \
          f"{db.port}/{db.database}"

    limited = hangs(bench, "--no-root-db", cwd=tmp_path)  # the site account alone (no root routes)
    report = limited.json()
    assert limited.code in (0, 1), limited
    entries = [e for e in report["errors"] if e["probe"] == "database"]
    assert [(e["kind"], e["subject"]) for e in entries] == [("limited", dsn)], entries
    assert "--db-url" in entries[0]["hint"] and f"{user!r}" in entries[0]["message"]
    assert ("PROCESS privilege" if db.kind == "mariadb" else "pg_read_all_stats") in entries[0]["message"]
    database = report["snapshot"]["database"]
    assert database["servers"] == [dsn] and database["limited_view"] == [dsn]
    own = [s for s in database["sessions"] if s["user"] == user]
    assert len(own) >= 2 and all(s["client_pid"] for s in own), own  # the two jobs' sessions, tied to horses
    for other in (s for s in database["sessions"] if s["user"] != user):  # PostgreSQL lists, but hides, the rest
        assert (other["query"], other["client_host"], other["client_pid"]) == (None, None, None), other
    if db.kind == "mariadb":  # no INNODB_TRX without PROCESS: no exact edge (the fallback needs a 5 s wait)
        assert database["lock_waits"] == [] and findings(report, "RQD401") == []
    assert [(a["route"], a["privileged"]) for a in report["database_access"]] == [("site_account", False)]
    text = locks(bench, "--no-root-db", cwd=tmp_path, fmt="text")
    assert "Could not see" in text.stdout and "--db-url" in text.stdout, text.stdout
    assert ("PROCESS privilege" if db.kind == "mariadb" else "pg_read_all_stats") in text.stdout

    full = hangs(bench, "--db-url", ADMIN[db.kind], cwd=tmp_path)
    report = full.json()
    assert full.code == 1, full
    assert not [e for e in report["errors"] if e["probe"] == "database"], report["errors"]
    assert report["snapshot"]["database"]["limited_view"] == []
    row = job_row(report, victim)
    assert row["activity"]["kind"] == "db_lock_wait" and row["pid"] == victim_pid
    assert (row["blocker"]["role"], row["blocker"]["job_id"]) == ("rq-job", holder), row["blocker"]
    assert [f["job_id"] for f in findings(report, "RQD401")] == [victim]


# --- 6. database unreachable or slow: the rest of the report stands -------------------------------------------------


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stuck_job(make_bench: Callable[..., Bench], workers: Workers, redis_client: redis.Redis,
              tarpit: scenarios.Tarpit) -> tuple[Bench, str, int]:
    """A job hung on an HTTP call without timeout (a problem whatever the database says)."""
    port = unused_port()
    bench = one_site_bench(make_bench, "mariadb", db_host="127.0.0.1", db_port=port)
    worker = workers.frappe(bench, "rq26", ("default",))
    job_id, pid = start_job(redis_client, "rq26", bench, worker, "default", "rqdoctor.scenarios.http_no_timeout",
                            {"url": tarpit.url})
    assert tarpit.wait_for_connection(20)
    time.sleep(1.5)
    return bench, job_id, pid


def assert_jobs_intact(report: dict[str, Any], job_id: str, pid: int) -> None:
    row = job_row(report, job_id)
    assert (row["pid"], row["location"]) == (pid, "local"), row
    assert row["activity"]["kind"] == "http", row["activity"]
    assert "RQD103" in row["findings"], row["findings"]
    assert report["snapshot"]["redis"]["workers"], "the Redis part is missing"


def test_unreachable_database_leaves_the_job_report_intact(stuck_job: tuple[Bench, str, int],
                                                           tmp_path: Path) -> None:
    bench, job_id, pid = stuck_job
    port = unused_port()
    run = hangs(bench, "--db-url", f"mysql://root@127.0.0.1:{port}/", "--timeout", "10", cwd=tmp_path)
    report = run.json()
    assert run.code == 1, run  # the stuck job decides the exit code
    assert run.seconds < 10 + 3, run
    assert_jobs_intact(report, job_id, pid)
    errors = {e["subject"]: e for e in report["errors"] if e["probe"] == "database"}
    assert errors[f"mysql://root@127.0.0.1:{port}"]["kind"] == "unreachable", errors
    assert "--db-url" in errors[f"mysql://root@127.0.0.1:{port}"]["hint"]
    assert report["snapshot"]["database"]["servers"] == []

    graph = locks(bench, "--db-url", f"mysql://root@127.0.0.1:{port}/", "--timeout", "10", cwd=tmp_path)
    assert graph.code == 2, graph  # nothing to show: the database is what `locks` is about
    assert graph.json()["locks"] == [] and graph.json()["errors"], graph.stdout


@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_slow_database_is_cut_off_at_the_deadline(stuck_job: tuple[Bench, str, int], tarpit: scenarios.Tarpit,
                                                  scheme: str, tmp_path: Path) -> None:
    bench, job_id, pid = stuck_job
    url = f"{scheme}://root@127.0.0.1:{tarpit.port}/"
    before = len(tarpit.connections)
    run = hangs(bench, "--db-url", url, "--timeout", "6", cwd=tmp_path)
    report = run.json()
    assert run.code == 1, run
    assert run.seconds < 6 + 3, run  # the deadline holds although the server never answers
    assert len(tarpit.connections) > before, "rqdoctor never reached the tarpit"
    assert_jobs_intact(report, job_id, pid)
    errors = {e["subject"]: e for e in report["errors"] if e["probe"] == "database"}
    assert errors[f"{scheme}://root@127.0.0.1:{tarpit.port}"]["kind"] == "timeout", errors

    graph = locks(bench, "--db-url", url, "--timeout", "5", cwd=tmp_path)
    assert graph.code == 2 and graph.seconds < 5 + 3, graph
    assert any(e["kind"] == "timeout" for e in graph.json()["errors"]), graph.stdout


# --- 7. passwords never leak ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("db", "flavour"), [_db("mariadb", "rq115")], indirect=["db"])
def test_seeded_passwords_never_appear_in_any_output(db: DBInfo, flavour: str, site_account: tuple[str, str],
                                                      make_bench: Callable[..., Bench], workers: Workers,
                                                      redis_client: redis.Redis, clients: Clients,
                                                      tmp_path: Path) -> None:
    user, site_password = site_account
    admin_user = f"adm_{uuid.uuid4().hex[:10]}"
    admin_password, argv_secret, wrong_password = (seeded_secret(admin_user, label) for label in
                                                   ("admin", "argv", "wrong"))
    for host in ("localhost", "127.0.0.1"):
        sql(db, f"CREATE USER '{admin_user}'@'{host}' IDENTIFIED BY '{admin_password}'",
            f"GRANT PROCESS, SELECT ON *.* TO '{admin_user}'@'{host}'")
    try:
        bench = one_site_bench(make_bench, db.kind, db_name=db.database, db_password=site_password)
        worker = workers.frappe(bench, flavour, ("long",))
        make_table(db)
        console = clients.python("console", db, *hold_row(db), user=user, password=site_password,
                                 argv=(f"--password={argv_secret}", "--db-password", argv_secret))
        kwargs = lock_kwargs(db, user=user)
        kwargs = {"password": site_password, **{k: v for k, v in kwargs.items() if k != "password"}}  # rq cuts at 75
        job_id, _ = start_job(redis_client, flavour, bench, worker, "long", WAIT[db.kind], kwargs)
        wait_for_waiters(db, 1)
        secrets = [site_password, admin_password, argv_secret, wrong_password, *bench.secrets]
        # what rqdoctor reads holds them in clear: the job's call string, the blocker's argv, the site config
        assert site_password in redis_client.hget(f"rq:job:{job_id}", "description")
        assert argv_secret in " ".join(psutil.Process(console.pid).cmdline())
        assert site_password in (bench.sites_path / "site1.local" / "site_config.json").read_text()
        admin_url = f"mysql://{admin_user}:{admin_password}@127.0.0.1:3306/"
        wrong_url = f"mysql://root:{wrong_password}@localhost:3306/"
        runs: list[Run] = [rqdoctor("locks", "--bench", str(bench.root), "--format", "json", "--no-root-db",
                                    cwd=tmp_path)]
        for fmt in ("json", "text", "markdown"):
            common = ("--bench", str(bench.root), "--format", fmt)
            urls = ("--db-url", admin_url, "--db-url", wrong_url)
            runs += [
                rqdoctor("hangs", *common, *urls, "--locals", *FAST, cwd=tmp_path),
                rqdoctor("locks", *common, *urls, cwd=tmp_path),
                rqdoctor("workers", *common, cwd=tmp_path),
                rqdoctor("target", *common, *urls, cwd=tmp_path),
            ]
    finally:
        for host in ("localhost", "127.0.0.1"):
            sql(db, f"DROP USER IF EXISTS '{admin_user}'@'{host}'")

    for run in runs:
        for secret in secrets:
            assert secret not in run.stdout and secret not in run.stderr, f"{secret} leaked by {run}"
    # the runs saw what they must not print: the leak check is not vacuous
    site_view = runs[0].json()  # the site's own account: it logs in with the site password
    assert site_view["snapshot"]["database"]["servers"] == [f"mysql://{user}:***@127.0.0.1:3306/{db.database}"]
    report = runs[1].json()
    row = job_row(report, job_id)
    assert row["blocker"] and (row["blocker"]["pid"], row["blocker"]["session_id"]) == (console.pid, console.session)
    errors = {e["subject"]: e["kind"] for e in report["errors"]}
    assert errors.get("mysql://root:***@localhost:3306") == "auth", report["errors"]
    (job,) = [j for j in report["snapshot"]["redis"]["jobs"] if j["job_id"] == job_id]
    assert "***" in job["description"], job["description"]  # the job's `password` kwarg, masked
    target = runs[4].json()
    assert f"mysql://{admin_user}:***@127.0.0.1:3306" in target["db_urls"], target
    processes = {p["pid"]: p for p in report["snapshot"]["processes"]}
    masked = processes[console.pid]["cmdline"][-3:]
    assert masked[0].startswith("--password=") and "***" in masked[0] and masked[1:] == ["--db-password", "***"]
    assert all(run.code in (0, 1) for run in runs), [str(r) for r in runs if r.code not in (0, 1)]
