"""Database probe: real MariaDB and PostgreSQL, real lock holders and waiters in separate processes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pymysql
import pytest

from rqdoctor.config import DbTarget, parse_db_url
from rqdoctor.deadline import Deadline
from rqdoctor.model import DatabaseState, DbSession, LockWait, ProbeError, Snapshot, TargetInfo
from rqdoctor.probes import database, db_mariadb, db_postgres
from rqdoctor.probes.database import (
    ServerView,
    clean_query,
    client_pids,
    client_processes,
    describe_error,
    probe_databases,
    server_groups,
)
from tests.harness.services import DBInfo, read_line

CLIENT = r"""
import sys, time
kind, where, port, user, password, db, *steps = sys.argv[1:]
if kind == "mariadb":
    import pymysql
    at = {"unix_socket": where} if where.startswith("/") else {"host": where, "port": int(port)}
    conn = pymysql.connect(user=user, password=password, database=db, autocommit=True, **at)
    run = lambda sql: conn.cursor().execute(sql)
    session = conn.thread_id()
else:
    import psycopg
    conn = psycopg.connect(host=where, port=int(port), user=user, password=password or None, dbname=db,
                           autocommit=True)
    run = conn.execute
    session = conn.info.backend_pid
print("session", session, flush=True)
for sql in steps:
    if sql == "READY":
        print("ready", flush=True)
    else:
        run(sql)
time.sleep(120)
"""


class Client:
    """A database client in its own process, running SQL steps then sleeping."""

    def __init__(self, info: DBInfo, *steps: str, where: str | None = None) -> None:
        args = [info.kind, where or info.host, str(info.port), info.user, info.password, info.database, *steps]
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, *args], stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.session = int(self._line("session").split()[1])

    def _line(self, prefix: str, timeout: float = 20) -> str:
        return read_line(self.proc, prefix, timeout)

    def ready(self) -> Client:
        self._line("ready")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    started: list[Client] = []

    def start(info: DBInfo, *steps: str, where: str | None = None) -> Client:
        client = Client(info, *steps, where=where)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()


def admin(info: DBInfo) -> DbTarget:
    scheme = "mysql" if info.kind == "mariadb" else "postgresql"
    return parse_db_url(f"{scheme}://{info.user}@{info.host}:{info.port}/{info.database}")


def sql(info: DBInfo, *statements: str) -> None:
    """Run statements as the fixture's admin user (setup and teardown only)."""
    if info.kind == "mariadb":
        conn = pymysql.connect(host=info.host, port=info.port, user=info.user, password=info.password,
                               database=info.database, autocommit=True)
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(host=info.host, port=info.port, user=info.user, dbname=info.database,
                             autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


def make_table(info: DBInfo) -> None:
    engine = " ENGINE=InnoDB" if info.kind == "mariadb" else ""
    sql(info, f"CREATE TABLE rqd_t (id INT PRIMARY KEY, note VARCHAR(20)){engine}",
        "INSERT INTO rqd_t VALUES (1, 'a'), (2, 'b')")


def probe(targets: list[DbTarget], seconds: float = 8) -> tuple[DatabaseState, list[ProbeError]]:
    errors: list[ProbeError] = []
    return probe_databases(targets, Deadline(seconds), errors), errors


def wait_for_edge(targets: list[DbTarget], waiter: int, timeout: float = 15) -> tuple[DatabaseState, LockWait]:
    """Probe until the lock wait of session ``waiter`` shows up (the waiter needs a moment to block)."""
    end = time.monotonic() + timeout
    while True:
        state, errors = probe(targets)
        edges = [w for w in state.lock_waits if w.waiting_session == waiter]
        if edges:
            return state, edges[0]
        if time.monotonic() > end:
            raise AssertionError(f"no lock wait for session {waiter}: {state.lock_waits} {errors}")
        time.sleep(0.3)


def session(state: DatabaseState, session_id: int) -> DbSession:
    return next(s for s in state.sessions if s.session_id == session_id)


def hold_row(info: DBInfo) -> tuple[str, ...]:
    return ("BEGIN", "SELECT * FROM rqd_t WHERE id = 1 FOR UPDATE", "READY")


def wait_row(info: DBInfo) -> tuple[str, ...]:
    timeout = "SET SESSION innodb_lock_wait_timeout = 60" if info.kind == "mariadb" else "SET lock_timeout = '60s'"
    return (timeout, "READY", "BEGIN", "SELECT * FROM rqd_t WHERE id = 1 FOR UPDATE")


def alter(info: DBInfo) -> tuple[str, ...]:
    timeout = "SET SESSION lock_wait_timeout = 60" if info.kind == "mariadb" else "SET lock_timeout = '60s'"
    return (timeout, "READY", "ALTER TABLE rqd_t ADD COLUMN extra INT")


@pytest.fixture(params=[pytest.param(k, marks=[pytest.mark.integration, getattr(pytest.mark, k)])
                        for k in ("mariadb", "postgres")])
def db(request: pytest.FixtureRequest) -> DBInfo:
    """Each test once on MariaDB and once on PostgreSQL (a private database on each)."""
    return request.getfixturevalue(request.param)


# --- integration: lock waits, client mapping -----------------------------------------------


def test_row_lock_wait_edge_with_blocker_idle_in_transaction(db: DBInfo, clients: Callable[..., Client]) -> None:
    make_table(db)
    holder = clients(db, *hold_row(db)).ready()
    waiter = clients(db, *wait_row(db)).ready()
    state, edge = wait_for_edge([admin(db)], waiter.session)

    assert edge.blocking_session == holder.session
    assert edge.kind == "row"
    assert edge.table and edge.table.endswith("rqd_t")
    assert edge.wait_age_s is not None and edge.wait_age_s >= 0
    blocker, victim = session(state, holder.session), session(state, waiter.session)
    assert blocker.idle_in_transaction and not victim.idle_in_transaction
    assert blocker.trx_age_s is not None and blocker.trx_age_s >= 0
    assert "FOR UPDATE" in (victim.query or "")
    if db.kind == "mariadb":
        assert blocker.trx_rows_locked and blocker.trx_rows_locked >= 1
        assert blocker.command == "Sleep"
    else:
        assert victim.wait_event == "Lock:transactionid"
    assert (blocker.client_pid, blocker.client_match) == (holder.pid, "tcp")
    assert (victim.client_pid, victim.client_match) == (waiter.pid, "tcp")
    assert {holder.pid, waiter.pid} <= client_pids(state)
    assert not state.limited_view
    assert all(s.session_id for s in state.sessions)
    assert os.getpid() not in client_pids(state), "rqdoctor's own session must be excluded"


def test_metadata_lock_wait_behind_open_transaction(db: DBInfo, clients: Callable[..., Client]) -> None:
    make_table(db)
    holder = clients(db, "BEGIN", "SELECT * FROM rqd_t", "READY").ready()
    ddl = clients(db, *alter(db)).ready()
    state, edge = wait_for_edge([admin(db)], ddl.session)

    assert edge.kind == "metadata"
    assert edge.blocking_session == holder.session
    assert edge.table and edge.table.endswith("rqd_t")
    assert session(state, holder.session).idle_in_transaction
    assert session(state, ddl.session).client_pid == ddl.pid
    if db.kind == "postgres":
        assert edge.lock_mode == "AccessExclusiveLock" and not edge.inferred


def test_unix_socket_client_matched_or_explicitly_unmatched(db: DBInfo, clients: Callable[..., Client]) -> None:
    if db.kind == "mariadb":
        conn = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password)
        with conn.cursor() as cur:
            cur.execute("SELECT @@socket")
            where = cur.fetchone()[0]
        conn.close()
    else:
        where = "/var/run/postgresql"
    if not Path(where).exists():
        pytest.skip(f"no local Unix socket at {where}")
    client = clients(db, "READY", where=where).ready()
    state, _ = probe([admin(db)])
    seen = session(state, client.session)
    assert seen.client_port is None
    if db.kind == "postgres" or seen.client_pid is not None:  # PG: backend pid -> its socket -> the peer: exact
        assert (seen.client_pid, seen.client_match) == (client.pid, "unix")
    else:  # other Unix-socket clients of this MariaDB make it ambiguous: said so, not guessed
        assert seen.client_match == "unix_ambiguous"

    second = clients(db, "READY", where=where).ready()
    state, _ = probe([admin(db)])
    both = [session(state, client.session), session(state, second.session)]
    if db.kind == "postgres":
        assert [(s.client_pid, s.client_match) for s in both] == [(client.pid, "unix"), (second.pid, "unix")]
    else:  # two processes on the socket and no port to tell them apart
        assert [(s.client_pid, s.client_match) for s in both] == [(None, "unix_ambiguous")] * 2


# --- integration: accounts and privileges --------------------------------------------------


@pytest.fixture
def site_account(db: DBInfo) -> Iterator[DbTarget]:
    """A Frappe-like per-site account (rights on its own database only) with a seeded password."""
    name, password = f"rqd_site_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    if db.kind == "mariadb":
        sql(db, f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT ALL PRIVILEGES ON `{db.database}`.* TO '{name}'@'%'")
        drop = f"DROP USER IF EXISTS '{name}'@'%'"
    else:
        sql(db, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
            f'GRANT ALL PRIVILEGES ON DATABASE "{db.database}" TO {name}')
        drop = f"DROP ROLE IF EXISTS {name}"
    try:
        yield DbTarget(kind=db.kind, host=db.host, port=db.port, user=name, password=password,
                       database=db.database, source="site:site1.test")
    finally:
        if db.kind == "postgres":
            sql(db, f"REVOKE ALL PRIVILEGES ON DATABASE \"{db.database}\" FROM {name}")
        sql(db, drop)


def test_site_account_is_a_limited_view_admin_is_not(db: DBInfo, site_account: DbTarget,
                                                      clients: Callable[..., Client]) -> None:
    other = clients(db, "READY").ready()  # the admin's session: invisible or opaque to the site account
    state, errors = probe([site_account])
    dsn = site_account.redacted()
    assert state.servers == [dsn] and state.limited_view == [dsn]
    limited = [e for e in errors if e.kind == "limited"]
    assert len(limited) == 1 and limited[0].subject == dsn and "--db-url" in limited[0].hint
    assert ("PROCESS" if db.kind == "mariadb" else "pg_read_all_stats") in limited[0].message
    hidden = [s for s in state.sessions if s.session_id == other.session]
    if db.kind == "mariadb":
        assert not hidden
    else:
        assert hidden[0].client_host is None and hidden[0].client_match == "hidden"

    state, errors = probe([site_account, admin(db)])  # same server: the admin account is used
    assert state.servers == [admin(db).redacted()] and not state.limited_view
    assert not [e for e in errors if e.kind == "limited"]
    assert session(state, other.session).client_pid == other.pid
    _assert_no_secret(site_account.password, state, errors)


def test_wrong_password_is_an_auth_error_without_the_password(db: DBInfo, site_account: DbTarget) -> None:
    wrong = dataclasses.replace(site_account, password=site_account.password + "-wrong")
    if db.kind == "postgres":  # the test server trusts 127.0.0.1: only an unknown role fails to log in
        wrong.user += "_nope"
    state, errors = probe([wrong])
    assert state.servers == [] and [e.kind for e in errors] == ["auth"]
    assert errors[0].subject == wrong.redacted() and ":***@" in errors[0].subject
    _assert_no_secret(wrong.password, state, errors)


def test_statements_are_read_only_and_time_limited(db: DBInfo) -> None:
    module = db_mariadb if db.kind == "mariadb" else db_postgres
    conn = module.connect(admin(db), Deadline(1.0))
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as slow:
            _execute(conn, "SELECT SLEEP(5)" if db.kind == "mariadb" else "SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2.0
        assert describe_error(admin(db), slow.value).kind == "timeout"
        with pytest.raises(Exception) as write:
            _execute(conn, f"CREATE TABLE {db.database}.rqd_nope (id INT)" if db.kind == "mariadb"
                     else "CREATE TABLE rqd_nope (id INT)")
        assert "read" in str(write.value).lower()
    finally:
        conn.close()


def _execute(conn: object, statement: str) -> None:
    if isinstance(conn, pymysql.connections.Connection):
        with conn.cursor() as cur:
            cur.execute(statement)
    else:
        conn.execute(statement)  # type: ignore[attr-defined]


# --- integration: unreachable and tarpit ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["mariadb", "postgres"])
def test_unreachable_port_is_an_error_not_an_exception(kind: str) -> None:
    target = DbTarget(kind=kind, port=_free_port(), user="u", password="Seeded-Secret-1", source="--db-url")
    started = time.monotonic()
    state, errors = probe([target], seconds=3)
    assert time.monotonic() - started < 3.5
    assert [e.kind for e in errors] == ["unreachable"] and errors[0].probe == "database"
    assert state.servers == [] and errors[0].subject == target.redacted()
    _assert_no_secret("Seeded-Secret-1", state, errors)


@pytest.mark.parametrize("kind", ["mariadb", "postgres"])
def test_tarpit_is_a_timeout_within_the_deadline(kind: str, tarpit: object) -> None:
    target = DbTarget(kind=kind, port=tarpit.port, user="u", password="Seeded-Secret-2",  # type: ignore[attr-defined]
                      source="--db-url")
    started = time.monotonic()
    state, errors = probe([target], seconds=1.5)
    assert time.monotonic() - started < 2.0
    assert [e.kind for e in errors] == ["timeout"] and state.servers == []
    _assert_no_secret("Seeded-Secret-2", state, errors)


def test_servers_are_probed_concurrently(tarpit: object) -> None:
    pits = [DbTarget(kind=k, port=tarpit.port, user=k, source="--db-url")  # type: ignore[attr-defined]
            for k in ("mariadb", "postgres")]
    started = time.monotonic()
    _, errors = probe(pits, seconds=1.5)
    assert time.monotonic() - started < 2.0 and len(errors) == 2


def _assert_no_secret(secret: str, state: DatabaseState, errors: list[ProbeError]) -> None:
    snapshot = Snapshot(host="h", generated_at=0.0, target=TargetInfo("redis://x", "test"), database=state,
                        errors=errors)
    for text in (repr(state), repr(errors), json.dumps(snapshot.to_dict())):
        assert secret not in text


# --- units ------------------------------------------------------------------------------


def test_server_groups_prefer_admin_and_deduplicate() -> None:
    site_a = DbTarget("mariadb", user="a", database="a", source="site:a")
    site_b = DbTarget("mariadb", user="b", database="b", source="site:b")
    root = parse_db_url("mysql://root@127.0.0.1:3306")
    pg = DbTarget("postgres", user="p", source="site:p")
    assert server_groups([site_a, pg, site_b, root]) == [[root, site_a, site_b], [pg]]


def test_run_all_abandons_a_job_past_the_deadline() -> None:
    started = time.monotonic()
    results = database._run_all([lambda: (None, []), lambda: time.sleep(5)], Deadline(0.3))  # type: ignore[list-item]
    assert results == [(None, []), None] and time.monotonic() - started < 1.0


def test_describe_error_scrubs_the_password_and_keeps_one_line() -> None:
    target = DbTarget("mariadb", user="u", password="hunter2-xyz", source="site:s")
    error = describe_error(target, pymysql.err.OperationalError(1045, "Access denied hunter2-xyz\nsecond\nthird"))
    assert error.kind == "auth" and "hunter2-xyz" not in error.message and "\n" not in error.message
    assert error.message.startswith("mysql://u:***@127.0.0.1:3306: Access denied ***")
    assert describe_error(target, RuntimeError("boom")).kind == "error"
    missing = describe_error(target, database.MissingDriver("PyMySQL", "pip install PyMySQL"))
    assert missing.kind == "missing_tool" and "pip install PyMySQL" in missing.hint


def test_clean_query_redacts_and_truncates() -> None:
    text = clean_query("UPDATE tabUser SET password='s3cret', api_key = 'abc' WHERE  name = 'x'" + " x" * 400)
    assert text is not None and "s3cret" not in text and "abc" not in text
    assert len(text) == database.QUERY_CHARS and text.endswith("…")
    assert "pw1" not in (clean_query(b"SET PASSWORD = PASSWORD('pw1')") or "pw1")
    assert clean_query(None) is None


def test_table_of_and_ddl() -> None:
    assert db_mariadb.table_of("ALTER TABLE `tabUser` ADD COLUMN x INT", "site1") == "site1.tabUser"
    assert db_mariadb.table_of("select name from `tabUser` where name='A' for update", "s") == "s.tabUser"
    assert db_mariadb.table_of("TRUNCATE other.t", "s") == "other.t"
    assert db_mariadb.table_of("SELECT 1", "s") is None
    assert db_mariadb.is_ddl("alter table t add column x int") and not db_mariadb.is_ddl("select * from t")


def _s(sid: int, **kw: object) -> DbSession:
    return DbSession(server="mysql://x", session_id=sid, **kw)  # type: ignore[arg-type]


def test_guess_metadata_blocker() -> None:
    ddl = _s(1, db="site", command="Query", state="Waiting for table metadata lock", time_s=5.0,
             query="ALTER TABLE tabUser ADD x INT")
    old_elsewhere = _s(2, db="other", command="Sleep", trx_age_s=100.0)
    holder = _s(3, db="site", command="Sleep", trx_age_s=20.0)
    too_young = _s(4, db="site", command="Sleep", trx_age_s=1.0)
    select = _s(5, db="site", command="Query", state="Waiting for table metadata lock", time_s=2.0,
                query="SELECT * FROM tabUser")
    sessions = [ddl, old_elsewhere, holder, too_young, select]
    assert db_mariadb.guess_metadata_blocker(ddl, "site.tabUser", sessions) is holder
    assert db_mariadb.guess_metadata_blocker(select, "site.tabUser", sessions) is ddl
    assert db_mariadb.guess_metadata_blocker(ddl, "site.tabUser", [ddl, too_young]) is None


def test_tcp_mapping_normalises_localhost_names() -> None:
    from types import SimpleNamespace as NS

    from rqdoctor.probes.sockets import LocalSockets

    sockets = LocalSockets()
    addr = NS
    sockets.__dict__["tcp"] = [  # the fixture's victim: PROCESSLIST host localhost:37780
        NS(laddr=addr(ip="127.0.0.1", port=37780), raddr=addr(ip="127.0.0.1", port=3306), pid=19307),
        NS(laddr=addr(ip="127.0.0.1", port=3306), raddr=addr(ip="127.0.0.1", port=37780), pid=900),
        NS(laddr=addr(ip="::ffff:10.1.2.3", port=5000), raddr=addr(ip="::ffff:10.9.9.9", port=3306), pid=77),
    ]
    sockets.__dict__["local_ips"] = {"127.0.0.1", "::1", "10.1.2.3"}
    view = ServerView(target=parse_db_url("mysql://root@127.0.0.1:3306"), server_ports={3306}, server_ip="127.0.0.1")
    view.sessions = [_s(85, client_host="localhost", client_port=37780),
                     _s(86, client_host="10.5.5.5", client_port=41000),
                     _s(87, client_host=None)]
    database.attach_clients([view], sockets)
    assert [(s.client_pid, s.client_match) for s in view.sessions] == [(19307, "tcp"), (None, "remote"),
                                                                          (None, "hidden")]
    remote = ServerView(target=parse_db_url("mysql://root@10.9.9.9:3306"), server_ports={3306}, server_ip="10.9.9.9")
    remote.sessions = [_s(1, client_host="10.1.2.3", client_port=5000)]
    database.attach_clients([remote], sockets)
    assert remote.sessions[0].client_pid == 77


@pytest.fixture
def pid_namespace_process() -> Iterator[int]:
    """A process in its own PID namespace (pid 1 there, as a container's main process): its host pid."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and util-linux unshare (a PID namespace)")
    leader = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"])
    try:
        end = time.monotonic() + 10
        while not (children := psutil.Process(leader.pid).children()) and time.monotonic() < end:
            time.sleep(0.05)
        assert children, "unshare started no child"
        yield children[0].pid
    finally:
        leader.kill()
        leader.wait(10)


@pytest.mark.cli
def test_a_pid_attribute_names_its_client_through_the_client_s_pid_namespace(pid_namespace_process: int) -> None:
    from types import SimpleNamespace as NS

    from rqdoctor.probes.sockets import LocalSockets

    inside = pid_namespace_process  # a containerised client: it reports _pid 1, its own getpid()
    bystander = os.getppid()  # a live host process that holds no connection to the server
    sockets = LocalSockets()
    sockets.__dict__["tcp"] = [NS(laddr=NS(ip="172.17.0.2", port=41000), raddr=NS(ip="127.0.0.1", port=3306),
                                  pid=inside)]
    sockets.__dict__["unix"], sockets.__dict__["local_ips"] = {}, {"127.0.0.1", "::1", "172.17.0.2"}
    view = ServerView(target=parse_db_url("mysql://root@127.0.0.1:3306"), server_ports={3306}, server_ip="127.0.0.1")
    view.sessions = [_s(5, client_host="localhost", client_port=39000), _s(6, client_host="localhost",
                                                                             client_port=39001)]
    view.attr_pids = {5: 1, 6: bystander}
    database.attach_clients([view], sockets)
    # host pid 1 is init, not the client; the bystander holds no connection: neither is named
    assert [(s.client_pid, s.client_match) for s in view.sessions] == [(inside, "_pid"), (None, "no_local_socket")]


def test_client_processes_redacts_the_command_line() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--password", "Pw-x1",
                             "postgresql://u:Pw-x2@h/db"])
    try:
        (info,) = client_processes([proc.pid, 2**22 + 12345])
        text = " ".join(info.cmdline)
        assert info.pid == proc.pid and info.ppid == os.getpid() and info.pgid is not None
        assert "Pw-x1" not in text and "Pw-x2" not in text
    finally:
        proc.kill()
        proc.wait()
    assert database._redact_client_argv(["/usr/bin/mysql", "-uroot", "-pTopSecret"]) == \
        ["/usr/bin/mysql", "-uroot", "-p***"]
