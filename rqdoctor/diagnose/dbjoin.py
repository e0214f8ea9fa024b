"""Join database sessions and lock waits to local processes, jobs and roles (pure)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from rqdoctor.diagnose.activity import KIND_DB_QUERY, Activity
from rqdoctor.diagnose.link import Links
from rqdoctor.model import DatabaseState, DbSession, LockWait, ProcessInfo, ProcKey, Snapshot

WEB_SERVERS = ("gunicorn", "uwsgi", "waitress", "frappe.app", "werkzeug")
DB_CLIENTS = ("mysql", "mariadb", "psql", "pgcli", "mycli")
CONSOLES = ("console", "ipython", "mariadb-console", "postgres-console", "jupyter")


@dataclass
class SessionRole:
    """Who is behind one database session."""

    role: str
    """``rq-job``, ``rq-worker``, ``web-worker``, ``console``, ``db-client``, ``process``, ``remote``, ``unmatched``."""
    pid: int | None = None
    job_id: str | None = None
    description: str = ""
    host: str | None = None
    """The host its client process runs on (set with ``pid``)."""

    @property
    def key(self) -> ProcKey | None:
        """Its client process, when known."""
        return ProcKey(self.host, self.pid) if self.pid is not None and self.host is not None else None


@dataclass
class LikelyWait:
    """A job's statement that by every visible sign waits on a lock the server would not show (limited view)."""

    server: str
    waiting_session: int
    job_id: str
    pid: int | None
    waited_s: float
    evidence: list[str] = field(default_factory=list)
    holders: list[int] = field(default_factory=list)
    """Session ids that could hold the lock, likeliest first."""
    holders_idle_before: bool = True
    """The holders were idle since before the wait began (else: every other idle session, a weaker guess)."""
    host: str | None = None
    """The host of the job's process (with ``pid``)."""

    @property
    def key(self) -> ProcKey | None:
        """The job's process, when known."""
        return ProcKey(self.host, self.pid) if self.pid is not None and self.host is not None else None


@dataclass
class LockGraph:
    """The lock-wait graph of one snapshot with every session's role."""

    sessions: dict[tuple[str, int], DbSession] = field(default_factory=dict)
    roles: dict[tuple[str, int], SessionRole] = field(default_factory=dict)
    waits: list[LockWait] = field(default_factory=list)
    likely: list[LikelyWait] = field(default_factory=list)
    """Lock waits inferred from what a limited account sees (see :func:`likely_waits`)."""

    def session(self, server: str, session_id: int) -> DbSession | None:
        """A session by server and id."""
        return self.sessions.get((server, session_id))

    def role(self, server: str, session_id: int) -> SessionRole:
        """The role of a session (``unmatched`` when unknown)."""
        return self.roles.get((server, session_id), SessionRole("unmatched"))

    def blockers_of(self, server: str, session_id: int) -> list[LockWait]:
        """Edges where this session waits."""
        return [w for w in self.waits if w.server == server and w.waiting_session == session_id]

    def chain(self, wait: LockWait) -> tuple[list[int], bool]:
        """Session ids from the waiter along the blockers; True when it comes back on itself (a cycle)."""
        path = [wait.waiting_session]
        current = wait
        while True:
            if current.blocking_session in path:
                return [*path, current.blocking_session], True
            path.append(current.blocking_session)
            onward = self.blockers_of(wait.server, current.blocking_session)
            if not onward:
                return path, False
            current = onward[0]


def role_of_process(process: ProcessInfo | None, links: Links, here: str) -> SessionRole:
    """Classify a client process (named ``pid N on HOST`` when not on ``here``: see ``Snapshot.own_host``)."""
    if process is None:
        return SessionRole("unmatched")
    key = links.key(process)
    on = f" on {key.host}" if key.host != here else ""
    pid = process.pid
    job = links.job_for(key)
    if job is not None:
        where = f", pid {pid}{on}" if on else ""
        return SessionRole("rq-job", pid, job.job.job_id, f"RQ job {job.job.job_id}{where}", key.host)
    argv = " ".join(process.cmdline)
    program = os.path.basename(process.cmdline[0]) if process.cmdline else ""
    if links.worker_for(key) is not None or (process.worker_like and "worker" in argv):
        return SessionRole("rq-worker", pid, description=f"RQ worker pid {pid}{on}", host=key.host)
    if any(w in argv for w in WEB_SERVERS):
        return SessionRole("web-worker", pid, description=f"web worker pid {pid}{on} ({program})", host=key.host)
    if program in DB_CLIENTS:
        return SessionRole("db-client", pid, description=f"{program} client pid {pid}{on}", host=key.host)
    programs = {os.path.basename(a) for a in process.cmdline}
    if any(c in programs or c in program for c in CONSOLES):
        return SessionRole("console", pid, description=f"console pid {pid}{on}", host=key.host)
    return SessionRole("process", pid, description=f"pid {pid}{on}: {argv[:80]}", host=key.host)


def build_graph(snapshot: Snapshot, links: Links) -> LockGraph:
    """Sessions, roles and lock waits of the snapshot's database state."""
    graph = LockGraph()
    if snapshot.database is None:
        return graph
    processes = {snapshot.key(p): p for p in snapshot.processes}
    for s in snapshot.database.sessions:
        key = (s.server, s.session_id)
        graph.sessions[key] = s
        if s.client_pid is not None:
            client = ProcKey(s.client_pid_host or snapshot.host, s.client_pid)
            graph.roles[key] = role_of_process(processes.get(client), links, snapshot.own_host)
            if graph.roles[key].role == "unmatched":
                on = f" on {client.host}" if client.host != snapshot.own_host else ""
                graph.roles[key] = SessionRole("process", s.client_pid, description=f"pid {s.client_pid}{on}",
                                               host=client.host)
        elif s.client_match == "remote":
            graph.roles[key] = SessionRole("remote", description=f"remote host {s.client_host}")
    graph.waits = list(snapshot.database.lock_waits)
    return graph


def is_postgres(server: str) -> bool:
    """True for a PostgreSQL server DSN."""
    return server.startswith("postgres")


def kill_statement(server: str, session_id: int) -> str:
    """The statement that ends a session (printed, never executed)."""
    if is_postgres(server):
        return f"SELECT pg_terminate_backend({session_id});"
    return f"KILL {session_id};"


def holding(session: DbSession | None) -> str:
    """What a blocking session is doing: its query, or how long it idles in its transaction."""
    if session is None:
        return "unknown (session not visible)"
    if session.idle_in_transaction or (session.command or "").lower() == "sleep":
        return f"idle in transaction for {session.time_s or 0:.0f} s"
    return f"running `{(session.query or '?')[:160]}` for {session.time_s or 0:.0f} s"


def blocker_dict(graph: LockGraph, wait: LockWait) -> dict[str, Any]:
    """The ``blocker`` object of a job's JSON: who holds the lock, what it does, how to end it."""
    session = graph.session(wait.server, wait.blocking_session)
    role = graph.role(wait.server, wait.blocking_session)
    chain, cycle = graph.chain(wait)
    who = role.description or role.role
    guess = "likely " if wait.inferred else ""
    return {
        "server": wait.server,
        "session_id": wait.blocking_session,
        "pid": role.pid,
        "host": role.host,
        "role": role.role,
        "job_id": role.job_id,
        "doing": holding(session),
        "trx_age_s": session.trx_age_s if session else None,
        "table": wait.table,
        "lock_kind": wait.kind,
        "wait_age_s": wait.wait_age_s,
        "chain": chain,
        "cycle": cycle,
        "inferred": wait.inferred,
        "kill": kill_statement(wait.server, wait.blocking_session),
        "summary": f"{guess}session {wait.blocking_session} = {who}, {holding(session)}"
                   + (f", lock on {wait.table}" if wait.table else "")
                   + (" (a guess: the server does not say who holds metadata locks)" if wait.inferred else ""),
    }


def job_waits(graph: LockGraph) -> dict[str, LockWait]:
    """Job id -> the lock wait its database session is in."""
    found: dict[str, LockWait] = {}
    for wait in graph.waits:
        role = graph.role(wait.server, wait.waiting_session)
        if role.role == "rq-job" and role.job_id:
            found.setdefault(role.job_id, wait)
    return found


# --- what a limited account still shows --------------------------------------------------------------------

LIKELY_WAIT_S = 5.0
"""A locking statement of a job running this long with no sign of progress is called a likely lock wait."""
_LOCKING = re.compile(r"^\s*(?:/\*.*?\*/\s*)*(?:UPDATE|DELETE|INSERT|REPLACE)\b|\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY"
                      r"\s+UPDATE|KEY\s+SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b", re.IGNORECASE | re.DOTALL)


def is_locking(query: str | None) -> bool:
    """A statement that takes row locks (UPDATE/DELETE/INSERT/REPLACE, SELECT … FOR UPDATE/SHARE)."""
    return bool(query and _LOCKING.search(query))


def likely_waits(snapshot: Snapshot, graph: LockGraph, activities: dict[ProcKey, Activity]) -> list[LikelyWait]:
    """Jobs whose statement waits on a lock that no lock view named, each with its likely holders.

    Only on servers seen through a limited account (or PostgreSQL sessions in a ``Lock`` wait that no
    edge explains). A MariaDB victim needs a locking statement running ``LIKELY_WAIT_S`` or more and a
    positive sign of no progress: its process's stack stuck in a DB query, or ``EXAMINED_ROWS`` unchanged
    when read twice; any sign of progress rules it out.
    """
    database = snapshot.database
    if database is None:
        return []
    waiting = {(w.server, w.waiting_session) for w in graph.waits}
    found = []
    for key, session in graph.sessions.items():
        role = graph.role(*key)
        if role.role != "rq-job" or not role.job_id or key in waiting:
            continue
        activity = activities.get(role.key) if role.key is not None else None
        evidence = _wait_evidence(session, key[0] in database.limited_view, activity)
        if evidence is None:
            continue
        holders, before = _holders(graph, session, role.key, activities)
        found.append(LikelyWait(key[0], session.session_id, role.job_id, role.pid, session.time_s or 0.0,
                                evidence, holders, before, role.host))
    return found


def _wait_evidence(session: DbSession, limited: bool, activity: Activity | None) -> list[str] | None:
    """Why this session's statement is a lock wait, or None when the evidence is not there."""
    waited = session.time_s or 0.0
    what = f"session {session.session_id} runs `{(session.query or '?')[:120]}`"
    if session.wait_event and session.wait_event.startswith("Lock:"):
        return [f"{what}, in wait event {session.wait_event} for {waited:.0f} s (a heavyweight lock wait)"]
    if not limited or session.command != "Query" or not is_locking(session.query) or waited < LIKELY_WAIT_S:
        return None
    signs = []
    if activity is not None:
        if activity.kind != KIND_DB_QUERY or activity.progress != "blocked":
            return None
        signs.append("its process's stack is stuck waiting for this query's result, with no CPU use")
    if session.examined_rows is not None and session.examined_rows_later is not None:
        if session.examined_rows_later != session.examined_rows:
            return None
        if session.examined_rows > 0:  # MariaDB often keeps 0 until a statement ends: no evidence either way
            signs.append(f"rows examined did not move ({session.examined_rows} on two reads)")
    if not signs:
        return None
    state = f" (state {session.state})" if session.state else ""
    return [f"{what}{state} for {waited:.0f} s: a locking statement", *signs,
            "this account cannot read the lock views (no PROCESS privilege), so the holder is not named by the server"]


def _holders(graph: LockGraph, victim: DbSession, victim_key: ProcKey | None,
             activities: dict[ProcKey, Activity]) -> tuple[list[int], bool]:
    """Idle sessions of the same account and database that could hold the lock, likeliest first."""
    pool = []
    for (server, sid), s in graph.sessions.items():
        client = graph.role(server, sid).key
        if server != victim.server or sid == victim.session_id or s.user != victim.user or s.db != victim.db:
            continue
        if client is not None and client == victim_key:
            continue
        if not _idle(s):
            continue
        pool.append(s)
    before = [s for s in pool if (s.time_s or 0.0) >= (victim.time_s or 0.0)]
    if before:
        return [s.session_id for s in sorted(before, key=lambda s: -(s.time_s or 0.0))], True
    quiet = [s for s in pool if not _progressing(graph.role(s.server, s.session_id), activities)]
    return [s.session_id for s in sorted(quiet, key=lambda s: -(s.time_s or 0.0))], False


def _idle(session: DbSession) -> bool:
    """Between statements: MariaDB ``Sleep``; PostgreSQL ``idle in transaction`` (plain ``idle`` holds no lock)."""
    if session.command is not None:
        return session.command.lower() == "sleep"
    return session.idle_in_transaction


def _progressing(role: SessionRole, activities: dict[ProcKey, Activity]) -> bool:
    activity = activities.get(role.key) if role.key is not None else None
    return activity is not None and activity.progress == "progressing"


def likely_blocker_dict(graph: LockGraph, likely: LikelyWait, holder: int) -> dict[str, Any]:
    """The ``blocker`` object of a likely wait (same keys as :func:`blocker_dict`), for one candidate holder."""
    session = graph.session(likely.server, holder)
    role = graph.role(likely.server, holder)
    who = role.description or role.role
    why = "idle since before the wait began" if likely.holders_idle_before else "idle (a weaker guess)"
    doing = holding(session) if session is None or session.trx_age_s is not None or session.idle_in_transaction \
        else f"idle for {session.time_s or 0:.0f} s, perhaps in an open transaction"
    return {
        "server": likely.server, "session_id": holder, "pid": role.pid, "host": role.host, "role": role.role,
        "job_id": role.job_id,
        "doing": doing, "trx_age_s": session.trx_age_s if session else None, "table": None,
        "lock_kind": "row", "wait_age_s": likely.waited_s, "chain": [likely.waiting_session, holder],
        "cycle": False, "inferred": True, "kill": kill_statement(likely.server, holder),
        "summary": f"likely session {holder} = {who}, {doing} ({why}; the server does not say)",
    }


def access_dicts(database: DatabaseState | None) -> list[dict[str, Any]]:
    """Per server: the account and route used, and what the bench scope hid."""
    if database is None:
        return []
    return [{"server": a.server, "user": a.user, "route": a.route, "detail": a.detail, "privileged": a.privileged,
             "tried": a.tried} for a in database.access]


def access_lines(database: DatabaseState | None) -> list[str]:
    """One line per server saying how it was seen, plus what the bench scope hid."""
    if database is None:
        return []
    lines = []
    known = {a.server for a in database.access}
    for server in (s for s in database.servers if s not in known):  # a snapshot older than DbAccess
        sees = "limited view" if server in database.limited_view else "full view"
        lines.append(f"database {server}: account as in the DSN, route not recorded ({sees})")
    for a in database.access:
        sees = "sees every session" if a.privileged else "limited view: its own sessions, no lock views"
        lines.append(f"database {a.server}: account {a.user!r} via {a.detail or a.route} ({sees})")
    if database.hidden_sessions or database.hidden_lock_waits:
        lines.append(f"{database.hidden_sessions} session(s) and {database.hidden_lock_waits} lock wait(s) of "
                     f"databases other than {', '.join(database.scope)} hidden")
    return lines
