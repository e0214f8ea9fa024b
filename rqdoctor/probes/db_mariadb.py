"""MariaDB / MySQL reads for the database probe (PyMySQL): sessions, transactions, lock waits."""

from __future__ import annotations

import re
import time
from typing import Any

from rqdoctor.config import DbTarget
from rqdoctor.dbroutes import is_privileged_route
from rqdoctor.deadline import Deadline
from rqdoctor.model import DbSession, LockWait
from rqdoctor.probes.database import (
    QUERY_FETCH,
    MissingDriver,
    ServerView,
    clean_query,
    driver_timeout,
)
from rqdoctor.probes.sockets import split_host_port

NO_PROCESS_PRIVILEGE = 1227
_TIMEOUT_CODES = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
_AUTH_CODES = {1044, 1045, 1698}
_UNREACHABLE_CODES = {2003, 2005, 2006}
LIMITED = ("this account lacks the PROCESS privilege: it sees only its own sessions, "
           "and no open transactions (INNODB_TRX) or row-lock waits")

_SESSIONS = """
SELECT ID, USER, HOST, DB, COMMAND, {time}, STATE, LEFT(INFO, {fetch}), {examined}
FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'
"""
_EXAMINED = "SELECT ID, EXAMINED_ROWS FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query'"
REREAD_S = 0.5
"""Pause before reading EXAMINED_ROWS of running statements again (progress of a long query; a likely lock wait)."""
_TRX = """
SELECT trx_mysql_thread_id, TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6)) / 1e6, trx_rows_locked
FROM information_schema.INNODB_TRX
"""
_ROW_WAITS_INNODB = """
SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, rl.lock_table, rl.lock_mode,
       TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW(6)) / 1e6
FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
LEFT JOIN information_schema.INNODB_LOCKS rl ON rl.lock_id = w.requested_lock_id
"""
_ROW_WAITS_MYSQL8 = """
SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, CONCAT(rl.OBJECT_SCHEMA, '.', rl.OBJECT_NAME), rl.LOCK_MODE,
       TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW(6)) / 1e6
FROM performance_schema.data_lock_waits w
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID
LEFT JOIN performance_schema.data_locks rl ON rl.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID
"""
_MDL_WAITS_MYSQL8 = """
SELECT wt.PROCESSLIST_ID, bt.PROCESSLIST_ID, CONCAT(w.OBJECT_SCHEMA, '.', w.OBJECT_NAME), w.LOCK_TYPE
FROM performance_schema.metadata_locks w
JOIN performance_schema.metadata_locks b ON b.OBJECT_TYPE = w.OBJECT_TYPE AND b.OBJECT_SCHEMA <=> w.OBJECT_SCHEMA
     AND b.OBJECT_NAME <=> w.OBJECT_NAME AND b.LOCK_STATUS = 'GRANTED' AND b.OWNER_THREAD_ID <> w.OWNER_THREAD_ID
JOIN performance_schema.threads wt ON wt.THREAD_ID = w.OWNER_THREAD_ID
JOIN performance_schema.threads bt ON bt.THREAD_ID = b.OWNER_THREAD_ID
WHERE w.LOCK_STATUS = 'PENDING' AND w.OBJECT_TYPE = 'TABLE'
"""
_MDL_PLUGIN = ("SELECT COUNT(*) FROM information_schema.PLUGINS "
               "WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'")
_MDL_HOLDERS = "SELECT THREAD_ID, TABLE_SCHEMA, TABLE_NAME FROM information_schema.METADATA_LOCK_INFO"
_CONNECT_PIDS = ("SELECT PROCESSLIST_ID, ATTR_VALUE FROM performance_schema.session_connect_attrs "
                 "WHERE ATTR_NAME = '_pid'")

_NAME = r"((?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))?)"
_DDL_TABLE = re.compile(
    r"^\s*(?:ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE|DROP\s+TABLE(?:\s+IF\s+EXISTS)?|TRUNCATE(?:\s+TABLE)?|RENAME\s+TABLE"
    r"|OPTIMIZE\s+TABLE|CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+)?INDEX\s+\S+\s+ON|DROP\s+INDEX\s+\S+\s+ON)\s+" + _NAME,
    re.IGNORECASE)
_DML_TABLE = re.compile(r"\b(?:FROM|UPDATE|INTO|JOIN)\s+" + _NAME, re.IGNORECASE)


def read_server(target: DbTarget, deadline: Deadline) -> ServerView:
    """Connect and read everything; driver errors propagate."""
    conn = connect(target, deadline)
    try:
        return _read(conn, target, deadline)
    finally:
        conn.close()


def connect(target: DbTarget, deadline: Deadline) -> Any:
    """A read-only autocommit connection whose statements time out before the deadline."""
    try:
        import pymysql
    except ImportError as exc:
        raise MissingDriver("PyMySQL", "pip install PyMySQL") from exc
    timeout = driver_timeout(deadline)
    where: dict[str, Any] = ({"unix_socket": target.socket} if target.socket
                             else {"host": target.host, "port": target.port or 3306})
    conn = pymysql.connect(user=target.user or None, password=target.password, connect_timeout=timeout,
                           read_timeout=timeout, write_timeout=timeout, autocommit=True, charset="utf8mb4",
                           program_name="rqdoctor", **where)
    try:
        with conn.cursor() as cur:
            budget = driver_timeout(deadline)
            if is_mariadb(conn):
                cur.execute("SET SESSION max_statement_time = %s", (round(budget, 3),))
            else:
                cur.execute("SET SESSION max_execution_time = %s", (int(budget * 1000),))
            cur.execute("SET SESSION TRANSACTION READ ONLY")
    except BaseException:
        conn.close()
        raise
    return conn


def is_mariadb(conn: Any) -> bool:
    """MariaDB (rather than MySQL), from the handshake's version string."""
    return "mariadb" in conn.get_server_info().lower()


def classify(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, hint)`` for a PyMySQL error, None for anything else."""
    import pymysql

    if not isinstance(exc, pymysql.err.MySQLError):
        return None
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = str(exc).lower()
    if code in _TIMEOUT_CODES or "timed out" in text:
        return "timeout", "the server did not answer in time: is it overloaded or hung? Raise --timeout to wait longer"
    if code in _AUTH_CODES:
        return "auth", "check the user and password (site_config.json db_name/db_password, or --db-url)"
    if code in _UNREACHABLE_CODES or code == 2013:
        return "unreachable", "is MariaDB running and listening there? (db_host/db_port/db_socket, --db-url)"
    if code == NO_PROCESS_PRIVILEGE:
        return "permission", "use an account with the PROCESS privilege (--db-url mysql://root@host:3306)"
    return "error", ""


def _read(conn: Any, target: DbTarget, deadline: Deadline) -> ServerView:
    import pymysql

    mariadb = is_mariadb(conn)
    mysql8 = not mariadb and _major(conn.get_server_info()) >= 8
    cur = conn.cursor()
    cur.execute("SELECT @@port, @@socket, @@performance_schema")
    port, sock, perf_schema = cur.fetchone()
    if is_privileged_route(target) and target.socket and int(port) != (target.port or 3306):
        raise WrongServer(f"the server on {target.socket} listens on port {port}, not the site's {target.port or 3306}")
    peer = conn._sock.getpeername() if not target.socket else None
    view = ServerView(target=target, server_ports={int(port), target.port or 3306},
                      server_ip=peer[0] if peer else None, unix_paths={sock} if sock else set())

    cur.execute(_SESSIONS.format(time="TIME_MS / 1000" if mariadb else "TIME", fetch=QUERY_FETCH,
                                 examined="EXAMINED_ROWS" if mariadb else "NULL"))
    by_id = {}
    for sid, user, host, db, command, time_s, state, query, examined in cur.fetchall():
        client_host, client_port = split_host_port(host or "")
        session = DbSession(server=view.dsn, session_id=int(sid), user=user, db=db, client_host=client_host or None,
                            client_port=client_port, command=command, state=state or None,
                            time_s=float(time_s) if time_s is not None else None, query=clean_query(query),
                            examined_rows=int(examined) if examined is not None else None)
        by_id[session.session_id] = session
    view.sessions = list(by_id.values())

    try:
        cur.execute(_TRX)
    except pymysql.err.OperationalError as exc:
        if exc.args[0] != NO_PROCESS_PRIVILEGE:
            raise
        view.limited = LIMITED
    else:
        for thread_id, age, rows_locked in cur.fetchall():
            session = by_id.get(int(thread_id))
            if session is not None:
                session.trx_age_s, session.trx_rows_locked = float(age), int(rows_locked)
                session.idle_in_transaction = session.command == "Sleep"
        view.partial("row-lock waits", lambda: view.lock_waits.extend(_row_waits(cur, view, mysql8)))
    view.partial("metadata-lock waits", lambda: view.lock_waits.extend(_metadata_waits(cur, view, by_id, mysql8)))
    if mariadb:
        view.partial("examined rows", lambda: _reread_examined(cur, by_id, deadline))
    if mysql8 or perf_schema:
        view.partial("connection attributes", lambda: view.attr_pids.update(_connect_pids(cur)))
    return view


class WrongServer(Exception):
    """A privileged route reached another server than the site's."""


def _reread_examined(cur: Any, by_id: dict[int, DbSession], deadline: Deadline) -> None:
    """Read EXAMINED_ROWS of running statements again after a short pause: is a long query still working?"""
    running = [s for s in by_id.values() if s.command == "Query" and s.examined_rows is not None]
    if not running or deadline.remaining() < 3 * REREAD_S:
        return
    time.sleep(REREAD_S)
    cur.execute(_EXAMINED)
    later = {int(sid): rows for sid, rows in cur.fetchall()}
    for session in running:
        if later.get(session.session_id) is not None:
            session.examined_rows_later = int(later[session.session_id])


def _row_waits(cur: Any, view: ServerView, mysql8: bool) -> list[LockWait]:
    cur.execute(_ROW_WAITS_MYSQL8 if mysql8 else _ROW_WAITS_INNODB)
    return [LockWait(server=view.dsn, waiting_session=int(w), blocking_session=int(b), table=_plain_name(table),
                     lock_mode=mode, wait_age_s=float(age) if age is not None else None)
            for w, b, table, mode, age in cur.fetchall()]


def _major(server_info: str) -> int:
    match = re.match(r"(?:5\.5\.5-)?(\d+)", server_info)
    return int(match.group(1)) if match else 0


def _plain_name(name: str | None) -> str | None:
    """```db`.`table``` -> ``db.table``."""
    return name.replace("`", "") if name else None


def _metadata_waits(cur: Any, view: ServerView, by_id: dict[int, DbSession], mysql8: bool) -> list[LockWait]:
    """Sessions waiting for a metadata lock and who holds it (exact, or the best guess when unknowable)."""
    waiters = [s for s in by_id.values() if s.state and "metadata lock" in s.state.lower()]
    if not waiters:
        return []
    if mysql8:
        cur.execute(_MDL_WAITS_MYSQL8)
        return [LockWait(server=view.dsn, waiting_session=int(w), blocking_session=int(b), kind="metadata",
                         table=table, lock_mode=mode, wait_age_s=_age(by_id.get(int(w))))
                for w, b, table, mode in cur.fetchall()]
    cur.execute(_MDL_PLUGIN)
    holders: list[tuple[int, str]] | None = None
    if cur.fetchone()[0]:
        cur.execute(_MDL_HOLDERS)
        holders = [(int(t), f"{schema}.{name}") for t, schema, name in cur.fetchall() if name]
    waits = []
    for waiter in waiters:
        table = table_of(waiter.query, waiter.db)
        if holders is not None and table:
            blockers = dict.fromkeys(t for t, held in holders if held == table and t != waiter.session_id)
            waits += [LockWait(server=view.dsn, waiting_session=waiter.session_id, blocking_session=t,
                               kind="metadata", table=table, wait_age_s=waiter.time_s) for t in blockers]
            continue
        blocker = guess_metadata_blocker(waiter, table, list(by_id.values()))
        if blocker is not None:
            waits.append(LockWait(server=view.dsn, waiting_session=waiter.session_id,
                                  blocking_session=blocker.session_id, kind="metadata", table=table,
                                  wait_age_s=waiter.time_s, inferred=True))
    return waits


def _age(session: DbSession | None) -> float | None:
    return session.time_s if session else None


def table_of(query: str | None, db: str | None) -> str | None:
    """``db.table`` a statement works on (the DDL target, else the first table named), best effort."""
    if not query:
        return None
    match = _DDL_TABLE.search(query) or _DML_TABLE.search(query)
    if not match:
        return None
    name = match.group(1).replace("`", "")
    return name if "." in name or not db else f"{db}.{name}"


def is_ddl(query: str | None) -> bool:
    """True for the DDL statements that take an exclusive metadata lock."""
    return bool(query and _DDL_TABLE.search(query))


def guess_metadata_blocker(waiter: DbSession, table: str | None, sessions: list[DbSession]) -> DbSession | None:
    """Without METADATA_LOCK_INFO: the likeliest holder of the metadata lock ``waiter`` waits for.

    A statement queued behind a waiting DDL on the same table waits for that DDL. Otherwise: the
    oldest session (preferring the table's schema) that was already in a transaction, or running
    a statement, when the wait began.
    """
    others = [s for s in sessions if s.session_id != waiter.session_id]
    if not is_ddl(waiter.query):
        ddl = [s for s in others if s.state and "metadata lock" in s.state.lower() and is_ddl(s.query)
               and table_of(s.query, s.db) == table]
        if ddl:
            return max(ddl, key=lambda s: s.time_s or 0.0)
    waited = waiter.time_s or 0.0

    def held_for(s: DbSession) -> float:
        if s.trx_age_s is not None:
            return s.trx_age_s
        busy = s.command == "Query" and not (s.state and "metadata lock" in s.state.lower())
        return (s.time_s or 0.0) if busy else -1.0

    candidates = [s for s in others if held_for(s) >= waited]
    schema = table.split(".")[0] if table else None
    same_schema = [s for s in candidates if schema and s.db == schema]
    pool = same_schema or candidates
    return max(pool, key=held_for) if pool else None


def _connect_pids(cur: Any) -> dict[int, int]:
    """Session id -> client pid from the ``_pid`` connection attribute (needs performance_schema)."""
    cur.execute(_CONNECT_PIDS)
    return {int(sid): int(pid) for sid, pid in cur.fetchall() if str(pid).isdigit()}
