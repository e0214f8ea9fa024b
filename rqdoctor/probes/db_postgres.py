"""PostgreSQL reads for the database probe (psycopg 3): sessions, transactions, lock waits."""

from __future__ import annotations

import math
from typing import Any

from rqdoctor.config import DbTarget
from rqdoctor.deadline import Deadline
from rqdoctor.model import DbSession, LockWait
from rqdoctor.probes.database import QUERY_FETCH, MissingDriver, ServerView, clean_query, driver_timeout

DEFAULT_SOCKET_DIRS = "/var/run/postgresql,/run/postgresql,/tmp"
LIMITED = ("this role lacks pg_read_all_stats: other roles' sessions show no query text, state "
           "or client address, so they cannot be tied to local processes")
_METADATA_LOCKTYPES = {"relation", "object", "virtualxid"}

_SERVER = """
SELECT current_setting('port')::int,
       (SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'),
       (SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')
        FROM pg_roles WHERE rolname = current_user),
       current_database()
"""
_SESSIONS = f"""
SELECT pid, usename, datname, host(client_addr), client_port, state, wait_event_type, wait_event,
       left(query, {QUERY_FETCH}), extract(epoch FROM now() - state_change)::float8,
       extract(epoch FROM now() - xact_start)::float8
FROM pg_stat_activity
WHERE (backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL))  -- NULL: another role's
  AND pid <> pg_backend_pid()
"""
_LOCK_WAITS = """
SELECT a.pid, b.blocker, w.locktype, w.mode, a.datname, extract(epoch FROM now() - a.query_start)::float8,
       ARRAY(SELECT l.relation::int8 FROM pg_locks l WHERE l.pid = a.pid AND l.relation IS NOT NULL
             ORDER BY l.granted, l.locktype <> 'tuple', l.mode NOT IN ('RowExclusiveLock', 'RowShareLock'))
FROM pg_stat_activity a
CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS b(blocker)
LEFT JOIN LATERAL (SELECT l.locktype, l.mode FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted LIMIT 1) w ON true
WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
"""
_RELATIONS = "SELECT oid::int8, oid::regclass::text, relkind::text FROM pg_class WHERE oid::int8 = ANY(%s::int8[])"


def read_server(target: DbTarget, deadline: Deadline) -> ServerView:
    """Connect (read-only, statement timeout from the deadline) and read everything; driver errors propagate."""
    conn = connect(target, deadline)
    try:
        return _read(conn, target, deadline)
    finally:
        conn.close()


def connect(target: DbTarget, deadline: Deadline, dbname: str | None = None) -> Any:
    """A read-only autocommit connection whose statements time out before the deadline."""
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDriver("psycopg", "pip install 'psycopg[binary]'") from exc
    timeout = driver_timeout(deadline)
    conn = psycopg.connect(host=target.socket or target.host, port=target.port or 5432, user=target.user or None,
                           password=target.password or None, dbname=dbname or target.database or "postgres",
                           connect_timeout=max(2, math.ceil(timeout)), application_name="rqdoctor",
                           autocommit=True)
    millis = max(1, int(driver_timeout(deadline) * 1000))
    conn.execute(f"SET statement_timeout = {millis}; SET lock_timeout = {millis}; "
                 "SET default_transaction_read_only = on")
    return conn


def classify(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, hint)`` for a psycopg error, None for anything else."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return None
    text = str(exc).lower()
    if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.ConnectionTimeout)) or "timeout" in text:
        return "timeout", "the server did not answer in time: is it overloaded or hung? Raise --timeout to wait longer"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return "permission", "use a role with pg_read_all_stats (--db-url postgresql://postgres@host:5432)"
    if any(s in text for s in ("authentication failed", "does not exist", "no pg_hba.conf entry", "password")):
        return "auth", "check the user, password and database (site_config.json, or --db-url)"
    if isinstance(exc, psycopg.OperationalError):
        return "unreachable", "is PostgreSQL running and listening there? (db_host/db_port, --db-url)"
    return "error", ""


def _read(conn: Any, target: DbTarget, deadline: Deadline) -> ServerView:
    port, socket_dirs, privileged, current_db = conn.execute(_SERVER).fetchone()
    dirs = [d.strip() for d in (socket_dirs or target.socket or DEFAULT_SOCKET_DIRS).split(",")]
    hostaddr = conn.info.hostaddr if not target.socket else ""
    view = ServerView(target=target, server_ports={int(port), target.port or 5432}, server_ip=hostaddr or None,
                      unix_paths={f"{d}/.s.PGSQL.{port}" for d in dirs if d and not d.startswith("@")},
                      limited="" if privileged else LIMITED)
    for row in conn.execute(_SESSIONS).fetchall():
        pid, user, db, addr, client_port, state, wait_type, wait, query, in_state, trx_age = row
        unix = client_port == -1
        view.sessions.append(DbSession(
            server=view.dsn, session_id=int(pid), user=user, db=db, client_host="[local]" if unix else addr,
            client_port=None if unix else client_port, state=state, time_s=in_state, query=clean_query(query),
            trx_age_s=trx_age, idle_in_transaction=bool(state and state.startswith("idle in transaction")),
            wait_event=f"{wait_type}:{wait}" if wait_type else None))
    view.partial("lock waits", lambda: view.lock_waits.extend(_lock_waits(conn, view, current_db, deadline)))
    return view


def _lock_waits(conn: Any, view: ServerView, current_db: str, deadline: Deadline) -> list[LockWait]:
    rows = conn.execute(_LOCK_WAITS).fetchall()
    wanted: dict[str, set[int]] = {}
    for row in rows:
        wanted.setdefault(row[4], set()).update(row[6])
    names = {}
    for db, oids in wanted.items():
        if oids:
            view.partial(f"table names in database {db!r}",
                         lambda db=db, oids=oids: names.update(_relations(conn, view.target, deadline, db, oids,
                                                                           db == current_db)))
    waits = []
    for waiter, blocker, locktype, mode, db, age, oids in rows:
        kind = "metadata" if locktype in _METADATA_LOCKTYPES or mode == "AccessExclusiveLock" else "row"
        waits.append(LockWait(server=view.dsn, waiting_session=int(waiter), blocking_session=int(blocker), kind=kind,
                              table=_table(names, db, oids), lock_mode=mode, wait_age_s=age))
    return waits


def _relations(conn: Any, target: DbTarget, deadline: Deadline, db: str, oids: set[int],
               here: bool) -> dict[tuple[str, int], tuple[str, str]]:
    """(database, oid) -> (name, relkind); another database needs its own short connection."""
    other = None if here else connect(target, deadline, dbname=db)
    try:
        rows = (conn if here else other).execute(_RELATIONS, (sorted(oids),)).fetchall()
    finally:
        if other is not None:
            other.close()
    return {(db, int(oid)): (name, relkind) for oid, name, relkind in rows}


def _table(names: dict[tuple[str, int], tuple[str, str]], db: str, oids: list[int]) -> str | None:
    """The first candidate relation that is a table (the waited-on or tuple-locked one comes first)."""
    for oid in oids:
        name, relkind = names.get((db, oid), ("", ""))
        if relkind in ("r", "p"):
            return name
    return f"oid {oids[0]} in {db}" if oids else None
